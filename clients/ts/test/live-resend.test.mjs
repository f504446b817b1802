// A keep-alive connection reset as a call went out, against a live server through a TCP proxy that
// can reset the client's connection. The HTTPS link resends the request once on a new connection:
// transparent when the server never got the first copy; OutcomeUnknown (never a third send, never
// "it failed") when the server had run it, on the same server (a replay) or after a restart (−32001).

import './helpers/guard.mjs';

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect as tcpConnect } from 'node:net';

import { connect, KeywardError } from '../dist/index.js';
import { startServer } from './helpers/server.mjs';

let server;
let proxy;

/**
 * A TCP proxy to 127.0.0.1:`port`. `dropNextAnswer()`: the next bytes the server sends back are not
 * forwarded, the client's connection is reset instead (the call ran, its answer is lost); resolves
 * when that happened. `resetNextRequest()`: the next bytes the client sends are not forwarded, its
 * connection is reset (the server never sees the call). `hold()` / `release()`: new connections
 * wait (their bytes kept) until released.
 */
async function startProxy(port) {
  const sockets = new Set();
  const state = { drop: null, resetRequest: false, held: null, connections: 0 };
  const track = (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  };
  const listener = createServer((client) => {
    track(client);
    state.connections += 1;
    const pending = [];
    let upstream = null;
    client.on('data', (chunk) => {
      if (state.resetRequest) {
        state.resetRequest = false;
        client.resetAndDestroy();
        upstream?.destroy();
        return;
      }
      if (upstream) upstream.write(chunk);
      else pending.push(chunk);
    });
    client.on('close', () => upstream?.destroy());
    const open = () => {
      if (client.destroyed) return;
      upstream = tcpConnect(port, '127.0.0.1');
      track(upstream);
      for (const chunk of pending.splice(0)) upstream.write(chunk);
      upstream.on('data', (chunk) => {
        if (state.drop) {
          const dropped = state.drop;
          state.drop = null;
          client.resetAndDestroy();
          upstream.destroy();
          dropped();
          return;
        }
        client.write(chunk);
      });
      upstream.on('close', () => client.destroy());
    };
    if (state.held) state.held.then(open);
    else open();
  });
  await new Promise((resolve) => listener.listen(0, '127.0.0.1', resolve));
  let release = () => {};
  return {
    url: `https://127.0.0.1:${listener.address().port}/v3/owner`,
    get connections() {
      return state.connections;
    },
    dropNextAnswer: () => new Promise((resolve) => (state.drop = resolve)),
    resetNextRequest: () => {
      state.resetRequest = true;
    },
    hold: () => {
      state.held = new Promise((resolve) => (release = resolve));
    },
    release: () => {
      state.held = null;
      release();
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        listener.close(() => resolve());
      }),
  };
}

before(async () => {
  server = await startServer();
  proxy = await startProxy(Number(new URL(server.url).port));
});

after(async () => {
  await proxy?.close();
  await server?.dispose();
});

async function rejection(promise) {
  return promise.then(
    (value) => assert.fail(`expected a rejection, got ${JSON.stringify(value)}`),
    (error) => error,
  );
}

function assertOutcomeUnknown(error) {
  assert.ok(error instanceof KeywardError, String(error));
  assert.equal(error.variant, 'OutcomeUnknown', `${error.variant}: ${error.message}`);
  assert.match(error.message, /reset as change_password went out/);
  assert.match(error.message, /may have run/);
  assert.match(error.message, /Check/);
}

/** Whether `password` opens wallet `name` (closing it again). */
async function opens(kw, name, password) {
  try {
    await kw.openWallet({ name, password });
  } catch (error) {
    if (error instanceof KeywardError && error.variant === 'Lifecycle') return false;
    throw error;
  }
  await kw.closeWallet({ name });
  return true;
}

test('a reset before the server read the call: resent once on a new connection, transparently', async () => {
  const kw = await connect({ bundle: server.tlsDir, url: proxy.url });
  assert.ok(Array.isArray(await kw.listWallets({})));
  const before = proxy.connections;
  proxy.resetNextRequest();
  assert.ok(Array.isArray(await kw.listWallets({})));
  assert.equal(proxy.connections, before + 1, 'a new connection carried the resend');
  await kw.close();
});

test('a reset after the server ran the call (the same server): OutcomeUnknown; it ran exactly once', async () => {
  const kw = await connect({ bundle: server.tlsDir, url: proxy.url });
  await kw.createWallet({ name: 'same', mnemonic: null, mnemonic_length: 16, password: 'old password' });
  const dropped = proxy.dropNextAnswer();
  const call = rejection(kw.changePassword({ name: 'same', old: 'old password', new: 'new password' }));
  await dropped;
  assertOutcomeUnknown(await call);
  // The connection goes on, and the change took: the new password opens the wallet, the old does not.
  assert.equal(await opens(kw, 'same', 'new password'), true);
  assert.equal(await opens(kw, 'same', 'old password'), false);
  await kw.close();
});

test('a reset after the server ran the call, then a restart: OutcomeUnknown, never a third send', async () => {
  const https = new URL(server.url).host;
  const kw = await connect({ bundle: server.tlsDir, url: proxy.url, timeoutMs: 20_000 });
  await kw.createWallet({ name: 'restart', mnemonic: null, mnemonic_length: 16, password: 'old password' });
  // The resend waits at the proxy while the server restarts (the same data, the same port).
  proxy.hold();
  const dropped = proxy.dropNextAnswer();
  const call = rejection(kw.changePassword({ name: 'restart', old: 'old password', new: 'new password' }));
  await dropped;
  await server.stop();
  server = await startServer({ root: server.root, listen: { https } });
  proxy.release();
  // The resend gets −32001: a new session and a third send would run change_password again, with
  // the old password, and report "wrong password" for a change that was made.
  assertOutcomeUnknown(await call);
  assert.equal(await opens(kw, 'restart', 'new password'), true);
  assert.equal(await opens(kw, 'restart', 'old password'), false);
  await kw.close();
});
