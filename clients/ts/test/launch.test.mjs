// launch(): `keyward serve --launcher` started by this process, its credentials read from the pipe,
// the whole walkthrough over them, stop(), a parent killed with SIGKILL, and launchers that misbehave.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { KeywardError, launch } from '../dist/index.js';
import { keywardBinary, tempDir, TEST_CONFIG } from './helpers/server.mjs';

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${reason}`);
});

const distIndex = fileURLToPath(new URL('../dist/index.js', import.meta.url));

function configIn(root) {
  const path = join(root, 'keyward-test.toml');
  writeFileSync(path, TEST_CONFIG);
  return path;
}

/** Every regular file under `dir` changed at or after `since` (ms), with its path. */
function filesSince(dir, since, found = []) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return found;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) filesSince(path, since, found);
    else if (entry.isFile()) {
      try {
        const stat = statSync(path);
        if (stat.mtimeMs >= since && stat.size < 8 * 1024 * 1024) found.push(path);
      } catch {
        // Gone meanwhile.
      }
    }
  }
  return found;
}

/** Whether `pid` is a live process (a zombie waiting for its reaper counts as gone). */
function alive(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

test('launch(): the walkthrough over credentials that never touch the disk, then stop()', async () => {
  const started = Date.now() - 1000;
  const root = tempDir();
  const dataDir = join(root, 'kw');
  const kw = await launch({ binary: keywardBinary(), dataDir, config: configIn(root), log: 'ignore' });
  try {
    assert.ok(Number.isInteger(kw.pid) && kw.pid > 0);
    assert.match(kw.server.url, /^https:\/\/127\.0\.0\.1:\d+\/v3\/owner$/);
    assert.match(kw.server.quic, /^127\.0\.0\.1:\d+$/);
    assert.ok(alive(kw.pid));
    const password = 'launch test password';
    assert.equal(await kw.createWallet({ name: 'demo', mnemonic: null, mnemonic_length: 32, password }), null);
    const token = await kw.openWallet({ name: 'demo', password: new TextEncoder().encode(password) });
    assert.match(token, /^[0-9a-f]{64}$/);
    const accounts = await kw.accounts({ token });
    assert.equal(accounts[0].label, 'default');
    const signed = await kw.signMessage({ token, path: 'm/44h/0h/0h/0/0', message: 'hi' });
    assert.match(signed.signature, /^[0-9a-f]+$/);
    assert.equal(await kw.closeWallet({ name: 'demo' }), null);
    // The client is the run's owner `launcher`.
    const clients = await kw.listClients({});
    const me = clients.find((c) => c.name === 'launcher');
    assert.equal(me?.role, 'owner');
  } finally {
    const exit = await kw.stop(1000);
    // It exited by itself within the second (stop() kills only after its timeout).
    assert.deepEqual(exit, { code: 0, signal: null });
  }
  assert.equal(alive(kw.pid), false);
  await assert.rejects(kw.accounts({ token: '00'.repeat(32) }), (e) => e instanceof KeywardError);

  // Nothing of the run's certificates or keys on disk: no tls/ in the data directory, no PEM there,
  // and no file in the temp dir written since the test started holds the run's CA or a private key.
  assert.equal(existsSync(join(dataDir, 'tls')), false);
  const caBody = kw.server.ca.split('\n').slice(1, 3).join('');
  for (const file of [...filesSince(dataDir, 0), ...filesSince(tmpdir(), started)]) {
    const text = readFileSync(file).toString('latin1');
    assert.ok(!text.includes(caBody), `${file} holds the run's CA`);
    if (file.startsWith(dataDir)) assert.ok(!text.includes('PRIVATE KEY'), `${file} holds a private key`);
  }
  rmSync(root, { recursive: true, force: true });
});

test('a parent killed with SIGKILL leaves no keyward process after 2 s', async () => {
  const root = tempDir();
  const script = join(root, 'parent.mjs');
  writeFileSync(
    script,
    `import { launch } from ${JSON.stringify(distIndex)};
const kw = await launch({ binary: ${JSON.stringify(keywardBinary())}, dataDir: ${JSON.stringify(join(root, 'kw'))}, log: 'ignore' });
await kw.listWallets({});
process.stdout.write(kw.pid + '\\n');
setInterval(() => {}, 1000);
`,
  );
  const parent = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = await Promise.race([
    once(parent.stdout, 'data'),
    sleep(30_000, undefined, { ref: false }).then(() => {
      throw new Error('the parent did not launch keyward within 30 s');
    }),
  ]);
  const pid = Number(String(chunk).trim());
  assert.ok(Number.isInteger(pid) && alive(pid), `keyward ${pid} runs`);
  parent.kill('SIGKILL');
  await once(parent, 'exit');
  const deadline = Date.now() + 2000;
  while (alive(pid) && Date.now() < deadline) await sleep(20);
  const survived = alive(pid);
  if (survived) process.kill(pid, 'SIGKILL');
  assert.equal(survived, false, 'keyward outlived its parent by 2 s');
  rmSync(root, { recursive: true, force: true });
});

test('a data directory another keyward holds is refused with the reason', async () => {
  const root = tempDir();
  const dataDir = join(root, 'kw');
  const first = await launch({ binary: keywardBinary(), dataDir, log: 'ignore' });
  try {
    await assert.rejects(launch({ binary: keywardBinary(), dataDir, log: 'ignore' }), (e) => {
      assert.ok(e instanceof KeywardError);
      assert.equal(e.variant, 'Launch');
      assert.match(e.message, /in use by another keyward/);
      return true;
    });
  } finally {
    await first.stop();
  }
  rmSync(root, { recursive: true, force: true });
});

/** A fake `keyward` that runs `body` (sh). */
function fakeBinary(root, body) {
  const path = join(root, `fake-${Math.random().toString(16).slice(2)}.sh`);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

test('a launcher that misbehaves gives a KeywardError, never a hang, and is not left running', async () => {
  const root = tempDir();
  const pidFile = join(root, 'pid');
  const cases = [
    { body: 'echo "not json"; sleep 30', variant: 'Launch', message: /not JSON/ },
    { body: 'echo "[1,2]"; sleep 30', variant: 'Launch', message: /not a JSON object/ },
    { body: `echo '{"keyward":"0.1.0","pid":'$$',"url":"https://127.0.0.1:1/v3/owner","quic":null}'; sleep 30`, variant: 'Launch', message: /no string "ca"/ },
    { body: `echo '{"keyward":"0.1.0","pid":'$$',"url":"https://example.com/v3/owner","quic":null,"ca":"a","cert":"b","key":"c"}'; sleep 30`, variant: 'Launch', message: /not its loopback HTTPS URL/ },
    { body: `echo '{"keyward":"0.1.0","pid":1,"url":"https://127.0.0.1:1/v3/owner","quic":null,"ca":"a","cert":"b","key":"c"}'; sleep 30`, variant: 'Launch', message: /says it is pid 1/ },
    { body: 'echo "keyward: cannot open the wallet store: boom" >&2; exit 1', variant: 'Launch', message: /exited \(code 1\).*boom/ },
    { body: 'head -c 70000 /dev/zero | tr "\\0" x; sleep 30', variant: 'Launch', message: /without a line end/ },
    { body: `echo $$ > ${pidFile}; sleep 30`, variant: 'Timeout', message: /did not print its line within 500 ms/, timeout: 500 },
  ];
  for (const { body, variant, message, timeout } of cases) {
    const binary = fakeBinary(root, body);
    const startedAt = Date.now();
    await assert.rejects(launch({ binary, log: 'ignore', startTimeoutMs: timeout ?? 5000 }), (e) => {
      assert.ok(e instanceof KeywardError, `${body}: ${e}`);
      assert.equal(e.variant, variant, `${body}: ${e.message}`);
      assert.match(e.message, message, body);
      return true;
    });
    assert.ok(Date.now() - startedAt < 10_000, `${body} took too long to fail`);
  }
  // The silent one was killed, not left behind.
  const silent = Number(readFileSync(pidFile, 'utf8').trim());
  assert.equal(alive(silent), false);
  // A binary that does not exist.
  await assert.rejects(launch({ binary: join(root, 'no-such-keyward'), log: 'ignore' }), (e) => {
    assert.ok(e instanceof KeywardError);
    assert.equal(e.variant, 'Launch');
    assert.match(e.message, /cannot start .*no-such-keyward/);
    return true;
  });
  rmSync(root, { recursive: true, force: true });
});

/** The KeywardError launch(options) rejects with; a server it started anyway is stopped, and the test fails. */
async function launchRefused(options) {
  let kw;
  try {
    kw = await launch(options);
  } catch (error) {
    return error;
  }
  await kw.stop(2000);
  assert.fail(`launch(${JSON.stringify(options)}) started a server`);
}

/** A config whose Argon2id makes create_wallet and open_wallet take over a second. */
function slowConfigIn(root) {
  const path = join(root, 'keyward-slow.toml');
  writeFileSync(path, '[kdf]\nm_cost_kib = 262144\nt_cost = 8\np_cost = 1\n');
  return path;
}

test('stop(500) with a slow call in flight (and another queued) returns within 1.5 s, and the calls settle', async () => {
  const root = tempDir();
  const kw = await launch({ binary: keywardBinary(), dataDir: join(root, 'kw'), config: slowConfigIn(root), log: 'ignore' });
  const started = Date.now();
  const settled = (promise) =>
    promise.then(
      () => 'answered',
      (e) => e,
    );
  // Each takes over a second of Argon2id on the server.
  const slow = [
    settled(kw.createWallet({ name: 'slow', mnemonic: null, mnemonic_length: 16, password: 'pw' })),
    settled(kw.openWallet({ name: 'slow', password: 'pw' })),
  ];
  // The first is on the server, its KDF running.
  await sleep(300);
  const stopAt = Date.now();
  await kw.stop(500);
  const took = Date.now() - stopAt;
  assert.ok(took < 1500, `stop(500) took ${took} ms`);
  assert.equal(alive(kw.pid), false);
  for (const outcome of await Promise.all(slow)) {
    assert.ok(outcome === 'answered' || outcome instanceof KeywardError, String(outcome));
  }
  assert.ok(Date.now() - started < 5000, 'the calls settled promptly');
  await assert.rejects(kw.listWallets({}), (e) => e instanceof KeywardError);
  rmSync(root, { recursive: true, force: true });
});

test('a program that forgets stop() still exits by itself, and its keyward with it', async () => {
  const root = tempDir();
  const script = join(root, 'forgetful.mjs');
  writeFileSync(
    script,
    `import { launch } from ${JSON.stringify(distIndex)};
const kw = await launch({ binary: ${JSON.stringify(keywardBinary())}, dataDir: ${JSON.stringify(join(root, 'kw'))}, config: ${JSON.stringify(configIn(root))}, log: 'ignore' });
await kw.listWallets({});
process.stdout.write(kw.pid + '\\n');
// No stop(), no close(): nothing is left for this process to do.
`,
  );
  const parent = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  parent.stdout.setEncoding('utf8');
  parent.stdout.on('data', (chunk) => {
    out += chunk;
  });
  const exited = once(parent, 'exit');
  const inTime = await Promise.race([exited.then(() => true), sleep(15_000, false, { ref: false })]);
  const pid = Number(out.trim());
  if (!inTime) {
    parent.kill('SIGKILL');
    if (Number.isInteger(pid) && pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
  }
  assert.ok(inTime, 'the program did not exit within 15 s of launching without stop()');
  const [code] = await exited;
  assert.equal(code, 0);
  assert.ok(Number.isInteger(pid) && pid > 0, `the program printed ${JSON.stringify(out)}`);
  const deadline = Date.now() + 3000;
  while (alive(pid) && Date.now() < deadline) await sleep(20);
  const survived = alive(pid);
  if (survived) process.kill(pid, 'SIGKILL');
  assert.equal(survived, false, 'keyward outlived the program that launched it by 3 s');
  rmSync(root, { recursive: true, force: true });
});

test('launch(): arguments of the wrong type are InvalidArgument KeywardErrors, never a TypeError', async () => {
  const binary = keywardBinary();
  const cases = [
    null,
    { binary: 5 },
    { binary: '' },
    { binary, dataDir: 'a\0b' },
    { binary, dataDir: 7 },
    { binary, config: 'x\0' },
    { binary, args: ['--x\0'] },
    { binary, args: '--quic off' },
    { binary, env: { PATH: 'a\0b' } },
    { binary, env: { 'A\0': 'b' } },
    { binary, env: 'PATH=/bin' },
    { binary, quic: 'no' },
    { binary, log: 'loud' },
    { binary, startTimeoutMs: -1 },
    { binary, maxAnswerBytes: 'big' },
  ];
  for (const options of cases) {
    const e = await launchRefused(options);
    assert.ok(e instanceof KeywardError, `${JSON.stringify(options)}: ${e}`);
    assert.equal(e.variant, 'InvalidArgument', `${JSON.stringify(options)}: ${e.message}`);
  }
});

test("an early exit names the process's reason, not clap's \"For more information\" line", async () => {
  await assert.rejects(launch({ binary: keywardBinary(), args: ['--no-such-flag'], log: 'ignore' }), (e) => {
    assert.ok(e instanceof KeywardError, String(e));
    assert.equal(e.variant, 'Launch');
    assert.match(e.message, /exited \(code 2\).*unexpected argument '--no-such-flag'/);
    assert.doesNotMatch(e.message, /For more information/);
    return true;
  });
  const root = tempDir();
  const binary = fakeBinary(root, 'echo "keyward: the data dir is locked" >&2; echo "  some detail" >&2; echo "For more information, try --help." >&2; exit 1');
  await assert.rejects(launch({ binary, log: 'ignore' }), (e) => {
    assert.match(e.message, /exited \(code 1\).*: keyward: the data dir is locked$/);
    return true;
  });
  // A line with terminal escapes and control characters is shown cleaned.
  const noisy = fakeBinary(root, 'printf "\\033[31merror:\\033[0m bad \\007thing\\n" >&2; exit 3');
  await assert.rejects(launch({ binary: noisy, log: 'ignore' }), (e) => {
    assert.match(e.message, /bad .thing$/);
    assert.doesNotMatch(e.message, /[\u0000-\u001f\u007f]/);
    return true;
  });
  rmSync(root, { recursive: true, force: true });
});

test('launch() passes namesSession and maxAnswerBytes to its connection', async () => {
  const root = tempDir();
  // An answer limit below the init answer's size: the connection refuses it, the server is stopped.
  const e = await launchRefused({ binary: keywardBinary(), dataDir: join(root, 'kw'), maxAnswerBytes: 32, log: 'ignore' });
  assert.ok(e instanceof KeywardError, String(e));
  assert.equal(e.variant, 'Protocol', e.message);
  assert.match(e.message, /larger than 32 bytes/);
  const kw = await launch({ binary: keywardBinary(), dataDir: join(root, 'kw'), namesSession: false, maxAnswerBytes: 1 << 20, log: 'ignore' });
  try {
    assert.equal(kw.session.namesSession, false);
    assert.ok(Array.isArray(await kw.listWallets({})));
  } finally {
    await kw.stop();
  }
  rmSync(root, { recursive: true, force: true });
});
