// Native messaging: a real `keyward native-host`, installed with `keyward native-host install` as a
// browser's host, spoken to with Chrome's framing by the stdio link; the same host behind a fake
// chrome.runtime for the browser link; and the browser link against ports that misbehave.

import './helpers/guard.mjs';

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';

import { connect, FrameReader, frame, KeywardError } from '../dist/index.js';
import { connectNative, findRuntime, NativeBrowserLink } from '../dist/browser.js';
import { startServer, tempDir } from './helpers/server.mjs';

const EXTENSION_ID = 'abcdefghijklmnopabcdefghijklmnop';
const OTHER_ID = 'ponmlkjihgfedcbaponmlkjihgfedcba';
const ORIGIN = `chrome-extension://${EXTENSION_ID}/`;
const little = endianness() === 'LE';

let server;
let wrapper;

before(async () => {
  server = await startServer();
  const owner = await connect({ bundle: server.tlsDir, url: server.url });
  await owner.createWallet({ name: 'ext', mnemonic: null, mnemonic_length: 16, password: 'pw' });
  await owner.close();
  const installed = server.cli([
    'native-host', 'install', '--browser', 'chromium', '--extension-id', EXTENSION_ID, '--role', 'reader',
    '--name', 'ext-test', '--manifest-dir', join(server.root, 'NativeMessagingHosts'), '--data-dir', server.dataDir, '--url', server.url,
  ]);
  assert.equal(installed.status, 0, installed.stderr);
  // The browser starts what the manifest names (the host's bundle is named after the host).
  const manifest = JSON.parse(readFileSync(join(server.root, 'NativeMessagingHosts', 'keyward.owner.json'), 'utf8'));
  wrapper = manifest.path;
});

after(async () => {
  await server?.dispose();
});

test('the stdio link: a whole session through `keyward native-host`, as the installed reader', async () => {
  const kw = await connect({ nativeHost: { command: wrapper, args: [ORIGIN] } });
  assert.equal(kw.info.transport, 'native');
  assert.deepEqual((await kw.listWallets()).map((w) => w.name), ['ext']);
  const token = await kw.openWallet({ name: 'ext', password: 'pw' });
  assert.equal((await kw.accounts({ token })).length, 1);
  // The host's client is a reader.
  await assert.rejects(kw.getMnemonic({ name: 'ext', password: 'pw' }), (e) => e instanceof KeywardError && e.variant === 'Forbidden');
  // Many calls, past a re-key.
  const fast = await connect({ nativeHost: { command: wrapper, args: [ORIGIN] }, rekeyAfter: 5 });
  for (let i = 0; i < 25; i++) assert.equal((await fast.accounts({ token })).length, 1);
  await fast.close();
  await kw.closeWallet({ name: 'ext' });
  await kw.close();
});

test('the host refuses another extension with one error frame: a KeywardError, not a hang', async () => {
  const error = await connect({ nativeHost: { command: wrapper, args: [`chrome-extension://${OTHER_ID}/`] } }).then(
    () => assert.fail('connected'),
    (e) => e,
  );
  assert.ok(error instanceof KeywardError);
  assert.equal(error.code, -32000);
  assert.match(error.message, /is not the one installed for host keyward.owner/);
});

test('a host that cannot be started, or that misbehaves, gives a KeywardError', async () => {
  const missing = await connect({ nativeHost: { command: join(server.root, 'no-such-host') } }).catch((e) => e);
  assert.ok(missing instanceof KeywardError, String(missing));
  const dir = tempDir('keyward-ts-hosts-');
  const script = (name, body) => {
    const path = join(dir, name);
    writeFileSync(path, `#!/usr/bin/env node\n${body}\n`);
    chmodSync(path, 0o700);
    return path;
  };
  const cases = [
    ['exits', script('exits.mjs', 'process.exit(3)'), 'Closed', /status 3/],
    ['truncated', script('truncated.mjs', `process.stdin.once('data', () => { const b = Buffer.alloc(8); b.writeUInt32${little ? 'LE' : 'BE'}(100); process.stdout.write(b, () => process.exit(0)); });`), 'Closed', /middle of a frame/],
    ['oversized', script('oversized.mjs', `process.stdin.once('data', () => { const b = Buffer.alloc(4); b.writeUInt32${little ? 'LE' : 'BE'}(5 * 1024 * 1024); process.stdout.write(b); }); setInterval(() => {}, 1000);`), 'Protocol', /larger than the limit/],
    ['garbage', script('garbage.mjs', `process.stdin.once('data', () => { const m = Buffer.from('nope'); const b = Buffer.alloc(4); b.writeUInt32${little ? 'LE' : 'BE'}(m.length); process.stdout.write(Buffer.concat([b, m])); }); setInterval(() => {}, 1000);`), 'Protocol', /not JSON/],
    ['silent', script('silent.mjs', 'setInterval(() => {}, 1000); process.stdin.resume();'), 'Timeout', /300 ms/],
  ];
  for (const [name, command, variant, message] of cases) {
    const started = Date.now();
    const error = await connect({ nativeHost: { command }, timeoutMs: 300 }).then(
      () => assert.fail(`${name}: connected`),
      (e) => e,
    );
    assert.ok(error instanceof KeywardError, `${name}: ${error}`);
    assert.equal(error.variant, variant, `${name}: ${error.message}`);
    assert.match(error.message, message, name);
    assert.ok(Date.now() - started < 5_000, `${name} took ${Date.now() - started} ms`);
  }
});

/**
 * A fake `chrome.runtime` whose connectNative starts the real host and moves objects over its frames,
 * as the browser does (the browser serializes posted objects to JSON and parses the host's frames).
 */
function bridgeRuntime(args) {
  return {
    lastError: undefined,
    connectNative(name) {
      assert.equal(name, 'keyward.owner');
      const child = spawn(wrapper, args, { stdio: ['pipe', 'pipe', 'ignore'] });
      const reader = new FrameReader(1024 * 1024, little);
      const onMessage = [];
      const onDisconnect = [];
      const port = {
        postMessage(message) {
          child.stdin.write(frame(new TextEncoder().encode(JSON.stringify(message)), little));
        },
        disconnect() {
          child.stdin.end();
        },
        onMessage: { addListener: (l) => onMessage.push(l) },
        onDisconnect: { addListener: (l) => onDisconnect.push(l) },
      };
      child.stdin.on('error', () => {});
      child.stdout.on('data', (chunk) => {
        for (const body of reader.push(new Uint8Array(chunk))) {
          const message = JSON.parse(new TextDecoder().decode(body));
          for (const l of onMessage) l(message);
        }
      });
      child.on('exit', () => {
        for (const l of onDisconnect) l(port);
      });
      return port;
    },
  };
}

test('the browser link through the real host, with a fake chrome.runtime', async () => {
  const kw = await connectNative({ runtime: bridgeRuntime([ORIGIN]) });
  assert.deepEqual(kw.info, { transport: 'native', host: 'keyward.owner', sessionId: null });
  assert.deepEqual((await kw.listWallets()).map((w) => w.name), ['ext']);
  const token = await kw.openWallet({ name: 'ext', password: new TextEncoder().encode('pw') });
  assert.equal((await kw.accounts({ token })).length, 1);
  await kw.close();
  await assert.rejects(connectNative({ runtime: bridgeRuntime([`chrome-extension://${OTHER_ID}/`]) }), (e) => e instanceof KeywardError && e.code === -32000);
});

/** A scripted port: `reply(message, port)` decides what happens to each posted message. */
function scriptedRuntime(reply) {
  const runtime = {
    lastError: undefined,
    ports: 0,
    connectNative() {
      runtime.ports += 1;
      const listeners = { message: [], disconnect: [] };
      const port = {
        postMessage: (message) => queueMicrotask(() => reply(message, port)),
        disconnect: () => {},
        onMessage: { addListener: (l) => listeners.message.push(l) },
        onDisconnect: { addListener: (l) => listeners.disconnect.push(l) },
        send: (m) => listeners.message.forEach((l) => l(m)),
        drop: (why) => {
          runtime.lastError = { message: why };
          listeners.disconnect.forEach((l) => l(port));
        },
      };
      return port;
    },
  };
  return runtime;
}

test('the browser link: a disconnect rejects the waiting call with a KeywardError naming the cause', async () => {
  const runtime = scriptedRuntime((_, port) => port.drop('Specified native messaging host not found.'));
  const error = await connectNative({ runtime }).then(
    () => assert.fail('connected'),
    (e) => e,
  );
  assert.ok(error instanceof KeywardError);
  assert.equal(error.variant, 'Closed');
  assert.match(error.message, /host not found/);
});

test('the browser link: answers in order; a late answer to a timed-out call is dropped', async () => {
  const runtime = scriptedRuntime((message, port) => {
    // Answer init with a malformed key, after a delay longer than the timeout.
    setTimeout(() => port.send({ id: message.id, jsonrpc: '2.0', result: { Ok: 'zz' } }), 400);
  });
  const link = new NativeBrowserLink('keyward.owner', runtime);
  const body = new TextEncoder().encode('{"id":1}');
  await assert.rejects(link.exchange(body, null, 100), (e) => e instanceof KeywardError && e.variant === 'Timeout');
  const second = link.exchange(new TextEncoder().encode('{"id":2}'), null, 2_000);
  const answer = JSON.parse(new TextDecoder().decode((await second).body));
  assert.equal(answer.id, 2, 'the first (late) answer went to nobody');
  await link.close();
  await assert.rejects(link.exchange(body, null, 100), (e) => e instanceof KeywardError && e.variant === 'Closed');
});

test('the browser link: no runtime, or one that throws, is a KeywardError', async () => {
  assert.equal(findRuntime({}), null);
  assert.ok(findRuntime({ chrome: { runtime: { connectNative() {} } } }));
  const firefox = { connectNative() {} };
  assert.equal(findRuntime({ browser: { runtime: firefox }, chrome: { runtime: { connectNative() {} } } }), firefox);
  assert.throws(() => new NativeBrowserLink('keyward.owner'), (e) => e instanceof KeywardError && /nativeMessaging/.test(e.message));
  const throwing = {
    connectNative() {
      throw new Error('Access to the specified native messaging host is forbidden.');
    },
  };
  await assert.rejects(connectNative({ runtime: throwing }), (e) => e instanceof KeywardError && e.variant === 'Unreachable' && /native-host install/.test(e.message));
});
