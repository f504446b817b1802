// The transports against servers that misbehave: nobody listening, a silent peer, answers that are
// not JSON, truncated and oversized frames. Each gives a KeywardError, in bounded time, and leaves no
// unhandled rejection. Also the frame codec and URL checks on their own.

import './helpers/guard.mjs';

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { connect, FrameReader, frame, HttpLink, KeywardError, parseOwnerUrl, UnixLink } from '../dist/index.js';
import { tempDir } from './helpers/server.mjs';

const root = tempDir('keyward-ts-links-');
const closers = [];
after(async () => {
  for (const close of closers) await close();
  rmSync(root, { recursive: true, force: true });
});

/** A TCP or Unix server; closed after the suite (its sockets destroyed). */
async function listen(server, address) {
  const sockets = new Set();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve) => server.listen(address, resolve));
  closers.push(
    () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return server;
}

async function freePort() {
  const probe = createNetServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** Asserts a KeywardError with `variant`, and that it came within `ms`. */
async function refusedWithin(promise, variant, ms, message) {
  const started = Date.now();
  let caught;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof KeywardError, `expected a KeywardError, got ${caught}`);
  assert.equal(caught.variant, variant, caught.message);
  if (message) assert.match(caught.message, message);
  assert.ok(Date.now() - started < ms, `took ${Date.now() - started} ms`);
  return caught;
}

test('nobody listening: Unreachable, naming the URL and `keyward serve`', async () => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/v3/owner`;
  const error = await refusedWithin(connect({ url }), 'Unreachable', 5_000);
  assert.ok(error.message.includes(url), error.message);
  assert.match(error.message, /keyward serve/);
  assert.equal(error.code, -32050);
  await refusedWithin(connect({ unix: join(root, 'nobody.sock') }), 'Unreachable', 5_000, /keyward serve/);
});

test('a silent TCP server: Timeout after the configured wait (HTTPS: test/bundle.test.mjs)', async () => {
  const silent = await listen(createNetServer(() => {}), { port: 0, host: '127.0.0.1' });
  const { port } = silent.address();
  await refusedWithin(connect({ url: `http://127.0.0.1:${port}/v3/owner`, timeoutMs: 300 }), 'Timeout', 3_000, /300 ms/);
});

test('a silent Unix server: Timeout', async () => {
  const path = join(root, 'silent.sock');
  await listen(createNetServer(() => {}), path);
  await refusedWithin(connect({ unix: path, timeoutMs: 300 }), 'Timeout', 3_000);
});

test('an HTTP server answering something that is not JSON-RPC: Protocol', async () => {
  const answers = [
    [200, 'hello'],
    [500, 'Internal Server Error'],
    [200, '{"id":1,"jsonrpc":"2.0","result":{"Ok":"not a key"}}'],
    [200, '{"id":1,"jsonrpc":"2.0","result":{"Ok":"02' + '00'.repeat(32) + '"}}'],
    [200, '[1,2,3]'],
    [404, '<html>not found</html>'],
    [200, ''],
  ];
  let next = 0;
  const fake = await listen(
    createHttpServer((request, response) => {
      request.resume();
      const [status, body] = answers[next++];
      response.writeHead(status, { 'content-type': 'text/plain' });
      response.end(body);
    }),
    { port: 0, host: '127.0.0.1' },
  );
  const url = `http://127.0.0.1:${fake.address().port}/v3/owner`;
  for (let i = 0; i < answers.length; i++) await refusedWithin(connect({ url }), 'Protocol', 5_000);
});

test('an HTTP answer larger than the limit: Protocol, not an unbounded buffer', async () => {
  const fake = await listen(
    createHttpServer((request, response) => {
      request.resume();
      response.writeHead(200);
      response.end('x'.repeat(64 * 1024));
    }),
    { port: 0, host: '127.0.0.1' },
  );
  await refusedWithin(connect({ url: `http://127.0.0.1:${fake.address().port}/`, maxAnswerBytes: 1024 }), 'Protocol', 5_000, /larger than 1024/);
});

test('a server error answered with a non-200 status still maps (the server\'s refusals are JSON)', async () => {
  const fake = await listen(
    createHttpServer((request, response) => {
      request.resume();
      response.writeHead(403, { 'content-type': 'application/json' });
      response.end('{"id":null,"jsonrpc":"2.0","error":{"code":-32600,"message":"Forbidden: the Host header must name a loopback host"}}');
    }),
    { port: 0, host: '127.0.0.1' },
  );
  await refusedWithin(connect({ url: `http://127.0.0.1:${fake.address().port}/v3/owner` }), 'InvalidRequest', 5_000, /Host header/);
});

/** A Unix server that answers every frame with `reply(socket)`. */
async function unixFake(name, reply) {
  const path = join(root, name);
  await listen(
    createNetServer((socket) => {
      socket.once('data', () => reply(socket));
      socket.on('error', () => {});
    }),
    path,
  );
  return path;
}

test('Unix: a truncated frame is a Protocol error naming it', async () => {
  const path = await unixFake('truncated.sock', (s) => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(100);
    s.end(Buffer.concat([header, Buffer.from('{"id":1,')]));
  });
  await refusedWithin(connect({ unix: path }), 'Protocol', 5_000, /truncated/);
});

test('Unix: an oversized frame is refused from its length alone', async () => {
  const path = await unixFake('oversized.sock', (s) => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(0xffffffff);
    s.write(header); // and never the body: the client must not wait for 4 GiB
  });
  await refusedWithin(connect({ unix: path, timeoutMs: 10_000 }), 'Protocol', 3_000, /larger than the limit/);
});

test('Unix: a close without an answer, and a frame that is not JSON', async () => {
  const closes = await unixFake('closes.sock', (s) => s.destroy());
  await refusedWithin(connect({ unix: closes }), 'Closed', 5_000, /without an answer/);
  const garbage = await unixFake('garbage.sock', (s) => s.write(frame(new TextEncoder().encode('not json'), false)));
  await refusedWithin(connect({ unix: garbage }), 'Protocol', 5_000, /not JSON/);
});

test('Unix: a socket path that is not a socket, and one this user may not open', async () => {
  const file = join(root, 'plain-file');
  writeFileSync(file, 'x');
  await refusedWithin(connect({ unix: file }), 'Unreachable', 5_000);
  const dir = join(root, 'locked');
  mkdirSync(dir, { mode: 0o000 });
  const error = await connect({ unix: join(dir, 'x.sock') }).then(
    () => assert.fail('connected'),
    (e) => e,
  );
  assert.ok(error instanceof KeywardError);
  // As root the directory's mode does not stop us: then there is simply no socket there.
  assert.ok(['Transport', 'Unreachable'].includes(error.variant), error.message);
});

test('the frame codec: split anywhere, big- and little-endian, limit from the length alone', () => {
  const message = new TextEncoder().encode('{"a":1}');
  for (const little of [false, true]) {
    const bytes = new Uint8Array([...frame(message, little), ...frame(new Uint8Array(0), little), ...frame(message, little)]);
    for (let split = 0; split <= bytes.length; split++) {
      const reader = new FrameReader(1024, little);
      const frames = [...reader.push(bytes.subarray(0, split)), ...reader.push(bytes.subarray(split))];
      assert.deepEqual(frames.map((f) => new TextDecoder().decode(f)), ['{"a":1}', '', '{"a":1}']);
      assert.equal(reader.midFrame, false);
    }
  }
  const reader = new FrameReader(16, false);
  assert.deepEqual(reader.push(new Uint8Array([0, 0, 0, 16, 1])), []);
  assert.equal(reader.midFrame, true);
  assert.throws(() => new FrameReader(16, false).push(new Uint8Array([0, 0, 0, 17])), (e) => e instanceof KeywardError && e.variant === 'Protocol');
  assert.deepEqual([...frame(new Uint8Array(1), true).subarray(0, 4)], [1, 0, 0, 0]);
  assert.deepEqual([...frame(new Uint8Array(1), false).subarray(0, 4)], [0, 0, 0, 1]);
});

test('URLs: the path defaults to /v3/owner; plain HTTP only on loopback; https needs credentials', async () => {
  assert.deepEqual(parseOwnerUrl('https://127.0.0.1:3420'), { secure: true, host: '127.0.0.1', port: 3420, path: '/v3/owner', text: 'https://127.0.0.1:3420' });
  assert.equal(parseOwnerUrl('http://[::1]:1/v3/owner').host, '::1');
  assert.throws(() => parseOwnerUrl('ftp://x'), (e) => e instanceof KeywardError && e.variant === 'InvalidArgument');
  assert.throws(() => parseOwnerUrl('not a url'), KeywardError);
  assert.throws(() => new HttpLink('http://example.com:1/v3/owner', null), /loopback/);
  assert.throws(() => new HttpLink('https://127.0.0.1:1/v3/owner', null), /bundle/);
  await assert.rejects(connect({ url: 'https://127.0.0.1:1/v3/owner' }), (e) => e instanceof KeywardError && e.variant === 'InvalidArgument');
  await assert.rejects(connect({}), (e) => e instanceof KeywardError && /connect\(\{ bundle \}\)/.test(e.message));
  await assert.rejects(connect({ unix: '/x', bundle: '/y' }), (e) => e instanceof KeywardError && e.variant === 'InvalidArgument');
  await assert.rejects(connect({ url: 'http://127.0.0.1:1/', timeoutMs: -1 }), (e) => e instanceof KeywardError);
  assert.ok(new UnixLink('/nowhere'));
});
