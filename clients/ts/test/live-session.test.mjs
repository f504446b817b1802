// The secure session against a live server: thousands of calls on one session past re-keying,
// concurrent callers queued on one session, −32001 recovery across a server restart (HTTPS and the
// Unix socket), and a client revoked mid-session.

import './helpers/guard.mjs';

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { connect, KeywardError } from '../dist/index.js';
import { startServer, tempDir } from './helpers/server.mjs';

let server;
let root;

before(async () => {
  server = await startServer();
  root = server.root;
});

after(async () => {
  await server?.dispose();
});

test('5,000 calls on one session, past re-keying, with no error', async (t) => {
  const kw = await connect({ bundle: server.tlsDir, url: server.url });
  await kw.createWallet({ name: 'busy', mnemonic: null, mnemonic_length: 16, password: 'pw' });
  const token = await kw.openWallet({ name: 'busy', password: 'pw' });
  const session = kw.info.sessionId;
  let errors = 0;
  const started = Date.now();
  for (let i = 0; i < 5_000; i++) {
    try {
      const accounts = await kw.accounts({ token });
      if (accounts.length !== 1) errors += 1;
    } catch {
      errors += 1;
    }
  }
  const ms = Date.now() - started;
  assert.equal(errors, 0);
  // 5,002 calls with a re-key after every 4,096 on a key: the session is the same, its key is new.
  assert.equal(kw.info.sessionId, session);
  assert.equal(kw.session.callsOnKey, 5_002 - 4_096);
  t.diagnostic(`5,000 accounts calls over HTTPS on one session: ${ms} ms (${Math.round(5_000_000 / ms)} calls/s)`);
  await kw.close();
});

test('a short re-key interval re-keys many times and keeps working', async () => {
  const kw = await connect({ url: server.httpUrl, rekeyAfter: 3 });
  for (let i = 0; i < 20; i++) assert.ok(Array.isArray(await kw.listWallets()));
  assert.ok(kw.session.callsOnKey <= 3);
  await kw.close();
});

test('concurrent calls on one connection are queued, one exchange at a time, all answered', async () => {
  const kw = await connect({ bundle: server.tlsDir, url: server.url });
  const token = await kw.openWallet({ name: 'busy', password: 'pw' });
  const results = await Promise.all(Array.from({ length: 64 }, (_, i) => (i % 2 ? kw.accounts({ token }) : kw.listWallets())));
  assert.equal(results.length, 64);
  // One failing call in the queue does not stop the others.
  const mixed = await Promise.allSettled([kw.listWallets(), kw.call('no_such_method', {}), kw.listWallets()]);
  assert.deepEqual(mixed.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.equal(mixed[1].reason.variant, 'MethodNotFound');
  await kw.close();
});

test('−32001 after a server restart: one new init and the call resent, transparently', async () => {
  const https = new URL(server.url).host;
  const kw = await connect({ bundle: server.tlsDir, url: server.url });
  const unix = await connect({ unix: server.unix });
  assert.ok(Array.isArray(await kw.listWallets()));
  assert.ok(Array.isArray(await unix.listWallets()));
  const before = kw.info.sessionId;

  await server.stop();
  // The same data and the same HTTPS port: the server knows no session any more.
  server = await startServer({ root, listen: { https } });

  const wallets = await kw.listWallets();
  assert.deepEqual(wallets.map((w) => w.name), ['busy']);
  assert.notEqual(kw.info.sessionId, before, 'a new session was made');
  // The Unix socket's session died with its connection: a new connection, a new session.
  assert.deepEqual((await unix.listWallets()).map((w) => w.name), ['busy']);

  // Without the recovery the caller sees the −32001 itself.
  const strict = await connect({ bundle: server.tlsDir, url: server.url, reinitWhenGone: false });
  await server.stop();
  server = await startServer({ root, listen: { https } });
  await assert.rejects(strict.listWallets(), (e) => e instanceof KeywardError && e.variant === 'SessionGone' && e.code === -32001);
  await strict.close();
  await kw.close();
  await unix.close();
});

test('a client revoked mid-session gets a Revoked error that says so', async () => {
  const dir = join(tempDir('keyward-ts-revoked-'), 'bundle');
  const made = server.cli(['clients', '--url', server.url, 'add', 'soon-gone', '--role', 'reader', '--out', dir]);
  assert.equal(made.status, 0, made.stderr);
  const owner = await connect({ bundle: server.tlsDir, url: server.url });
  const reader = await connect({ bundle: dir, url: server.url });
  assert.ok(Array.isArray(await reader.listWallets()));

  await owner.revokeClient({ name: 'soon-gone' });
  const error = await reader.listWallets().then(
    () => assert.fail('a revoked client was served'),
    (e) => e,
  );
  assert.ok(error instanceof KeywardError, String(error));
  assert.ok(['Revoked', 'Tls'].includes(error.variant), `${error.variant}: ${error.message}`);
  assert.match(error.message, /revoked/);
  // And a new connection with the same bundle is refused the same way.
  await assert.rejects(connect({ bundle: dir, url: server.url }), (e) => e instanceof KeywardError && /revoked/.test(e.message));
  await reader.close();
  await owner.close();
});
