// SecureSession over an in-process Link that plays a V3 server: the session header, re-keying after
// N calls, one transparent re-init and resend on −32001, the queue, timeouts of links that never
// answer, and links that throw something other than a KeywardError.

import './helpers/guard.mjs';

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { secp256k1 } from '@noble/curves/secp256k1.js';

import { KeywardError, Keyward, SecureSession } from '../dist/index.js';
import { aesOpen, aesSeal, importAesKey, sharedX } from '../dist/session.js';
import { resendFailed } from '../dist/secure.js';
import { fromBase64, fromHex, toBase64, toHex } from '../dist/bytes.js';
import { dec, json } from './helpers/fake.mjs';

/** A tiny V3 server as a Link: sessions by header, re-keying, a switch to forget every session. */
class FakeServer {
  constructor() {
    this.sessions = new Map();
    this.accepted = new Map();
    this.log = [];
    this.nextSession = 1;
    this.nonce = 0;
  }

  async newKey(pubHex) {
    const secret = secp256k1.utils.randomSecretKey();
    return { pub: toHex(secp256k1.getPublicKey(secret, true)), key: await importAesKey(sharedX(secret, fromHex(pubHex))) };
  }

  async exchange(body, session) {
    const request = JSON.parse(dec(body));
    if (request.method === 'init_secure_api') {
      const { pub, key } = await this.newKey(request.params.ecdh_pubkey);
      const id = `s${this.nextSession++}`;
      this.sessions.set(id, key);
      this.log.push(['init', session]);
      return { body: json({ id: request.id, jsonrpc: '2.0', result: { Ok: pub } }), session: id };
    }
    const key = this.sessions.get(session);
    if (!key) {
      this.log.push(['gone', session]);
      return { body: json({ id: request.id, jsonrpc: '2.0', error: { code: -32001, message: "Encryption must be enabled. Please call 'init_secure_api` first" } }), session: null };
    }
    const plain = await aesOpen(key, fromHex(request.params.nonce), fromBase64(request.params.body_enc));
    if (plain === null) {
      this.log.push(['undecryptable', session]);
      return { body: json({ id: request.id, jsonrpc: '2.0', error: { code: -32002, message: "Decryption error: authentication failed under this session's key" } }), session: null };
    }
    // Anti-replay as the real server: every nonce a session's key accepted, forgotten on a re-key.
    const seen = this.accepted.get(session) ?? new Set();
    this.accepted.set(session, seen);
    if (seen.has(request.params.nonce)) {
      this.log.push(['replay', session]);
      return { body: json({ id: request.id, jsonrpc: '2.0', error: { code: -32002, message: 'Encrypted request format error: replayed nonce: this envelope was already accepted' } }), session: null };
    }
    seen.add(request.params.nonce);
    const inner = JSON.parse(dec(plain));
    this.log.push([inner.method, session]);
    let result = { echo: inner.params };
    let next = null;
    if (inner.method === 'init_secure_api') {
      const made = await this.newKey(inner.params.ecdh_pubkey);
      result = made.pub;
      next = made.key;
    }
    const nonce = new Uint8Array(12);
    new DataView(nonce.buffer).setUint32(0, ++this.nonce);
    const sealed = await aesSeal(key, nonce, json({ id: inner.id, jsonrpc: '2.0', result: { Ok: result } }));
    if (next && !this.ignoreRekeys) {
      this.sessions.set(session, next);
      this.accepted.delete(session);
    }
    return { body: json({ id: request.id, jsonrpc: '2.0', result: { Ok: { nonce: toHex(nonce), body_enc: toBase64(sealed) } } }), session: null };
  }

  async close() {
    this.closed = true;
  }
}

test('the session id is named on every call; re-keying after N calls keeps it', async () => {
  const server = new FakeServer();
  const secure = await SecureSession.open(server, { rekeyAfter: 3 });
  assert.equal(secure.sessionId, 's1');
  for (let i = 0; i < 7; i++) assert.deepEqual(await secure.call('ping', { i }), { echo: { i } });
  const methods = server.log.map(([m]) => m);
  assert.deepEqual(methods, ['init', 'ping', 'ping', 'ping', 'init_secure_api', 'ping', 'ping', 'ping', 'init_secure_api', 'ping']);
  assert.ok(server.log.slice(1).every(([, s]) => s === 's1'));
  assert.equal(secure.callsOnKey, 1);
  const unnamed = await SecureSession.open(new FakeServer(), { namesSession: false });
  await assert.rejects(unnamed.call('ping', {}), (e) => e instanceof KeywardError && e.variant === 'SessionGone');
});

test('−32001: one new init and the same call resent, once', async () => {
  const server = new FakeServer();
  const secure = await SecureSession.open(server);
  await secure.call('ping', {});
  server.sessions.clear(); // the server restarted
  assert.deepEqual(await secure.call('ping', { again: true }), { echo: { again: true } });
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'ping', 'gone', 'init', 'ping']);
  assert.equal(secure.sessionId, 's2');
  // A server that forgets every session at once: the resend's −32001 goes to the caller.
  const forgetful = new FakeServer();
  const flaky = await SecureSession.open(forgetful);
  const realInit = forgetful.exchange.bind(forgetful);
  forgetful.sessions.clear();
  forgetful.exchange = async (body, session) => {
    const answer = await realInit(body, session);
    forgetful.sessions.clear();
    return answer;
  };
  await assert.rejects(flaky.call('ping', {}), (e) => e instanceof KeywardError && e.code === -32001);
  assert.deepEqual(forgetful.log.map(([m]) => m), ['init', 'gone', 'init', 'gone']);
});

test('a re-key the server no longer knows the session for becomes a new init', async () => {
  const server = new FakeServer();
  const secure = await SecureSession.open(server, { rekeyAfter: 1 });
  await secure.call('ping', {});
  server.sessions.clear();
  await secure.call('ping', {});
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'ping', 'gone', 'init', 'ping']);
});

test('calls are queued: one exchange in flight, answers in order', async () => {
  const server = new FakeServer();
  let inFlight = 0;
  let most = 0;
  const link = {
    async exchange(body, session, timeoutMs) {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, 2));
      try {
        return await server.exchange(body, session, timeoutMs);
      } finally {
        inFlight -= 1;
      }
    },
    close: async () => {},
  };
  const secure = await SecureSession.open(link);
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => secure.call('ping', { i })));
  assert.deepEqual(answers.map((a) => a.echo.i), Array.from({ length: 20 }, (_, i) => i));
  assert.equal(most, 1);
});

test('a link that never answers times out; one that throws a non-KeywardError is wrapped', async () => {
  const silent = { exchange: () => new Promise(() => {}), close: async () => {} };
  const started = Date.now();
  await assert.rejects(SecureSession.open(silent, { timeoutMs: 100 }), (e) => e instanceof KeywardError && e.variant === 'Timeout');
  assert.ok(Date.now() - started < 2_000);
  const throwing = {
    exchange: async () => {
      throw new TypeError('boom');
    },
    close: async () => {},
  };
  await assert.rejects(SecureSession.open(throwing), (e) => e instanceof KeywardError && /boom/.test(e.message));
  const garbage = { exchange: async () => ({ body: 'not bytes', session: null }), close: async () => {} };
  await assert.rejects(SecureSession.open(garbage), (e) => e instanceof KeywardError);
});

test('Keyward.open closes the link when init fails; close() waits for the call in flight', async () => {
  let closed = 0;
  const refusing = {
    exchange: async () => ({ body: json({ id: 1, jsonrpc: '2.0', error: { code: -32602, message: 'Invalid params: x' } }), session: null }),
    close: async () => {
      closed += 1;
    },
  };
  await assert.rejects(Keyward.open(refusing, { transport: 'fake' }), (e) => e instanceof KeywardError && e.variant === 'InvalidParams');
  assert.equal(closed, 1);

  const server = new FakeServer();
  const kw = await Keyward.open(server, { transport: 'fake' });
  const call = kw.call('ping', { x: 1 });
  await kw.close();
  assert.deepEqual(await call, { echo: { x: 1 } });
  assert.equal(server.closed, true);
  await assert.rejects(kw.call('ping', {}), (e) => e instanceof KeywardError && e.variant === 'Closed');
  await assert.rejects(kw.call('', {}), (e) => e instanceof KeywardError);
});

// ---------------------------------------------------------------------------------------------------
// A link that resent a request (HTTP after a keep-alive reset): the call may have run already.

/**
 * A link over `server` that, when `resendNext` is set, plays a reset as the next request went out:
 * the server gets it (unless `reached` is false) and runs it, its answer is lost, `between()` runs
 * (e.g. a restart), and the same bytes are sent again; the second answer comes back marked resent.
 */
function resendingLink(server) {
  const link = {
    resendNext: null,
    async exchange(body, session, timeoutMs) {
      const plan = link.resendNext;
      if (!plan) return server.exchange(body, session, timeoutMs);
      link.resendNext = null;
      if (plan.reached !== false) await server.exchange(body, session, timeoutMs); // its answer is lost
      plan.between?.();
      if (plan.fail) throw resendFailed(plan.fail());
      const answer = await server.exchange(body, session, timeoutMs);
      return { ...answer, resent: true };
    },
    close: async () => {},
  };
  return link;
}

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(promise) {
  return promise.then(
    (value) => assert.fail(`expected a rejection, got ${JSON.stringify(value)}`),
    (error) => error,
  );
}

function assertOutcomeUnknown(error, method) {
  assert.ok(error instanceof KeywardError, String(error));
  assert.equal(error.variant, 'OutcomeUnknown', error.message);
  assert.notEqual(error.code, -32001, 'not a code a caller would retry on');
  assert.match(error.message, new RegExp(method));
  assert.match(error.message, /reset/);
  assert.match(error.message, /may have run/);
  assert.match(error.message, /check/i);
}

test('a resent call the server had already run (Replay): OutcomeUnknown, and it is not sent again', async () => {
  const server = new FakeServer();
  const link = resendingLink(server);
  const secure = await SecureSession.open(link);
  link.resendNext = {};
  assertOutcomeUnknown(await rejection(secure.call('change_password', { n: 1 })), 'change_password');
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'change_password', 'replay']);
  // The session goes on.
  assert.deepEqual(await secure.call('ping', {}), { echo: {} });
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'change_password', 'replay', 'ping']);
});

test('a resent call answered −32001 (the server restarted in between): OutcomeUnknown, never a third send', async () => {
  const server = new FakeServer();
  const link = resendingLink(server);
  const secure = await SecureSession.open(link);
  link.resendNext = { between: () => server.sessions.clear() };
  assertOutcomeUnknown(await rejection(secure.call('change_password', { n: 1 })), 'change_password');
  // It ran once; no new init and no resend followed the −32001.
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'change_password', 'gone']);
  // The next call finds the session gone and recovers as usual.
  assert.deepEqual(await secure.call('ping', {}), { echo: {} });
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'change_password', 'gone', 'gone', 'init', 'ping']);
  // With reinitWhenGone off the same: OutcomeUnknown, not SessionGone.
  const strictServer = new FakeServer();
  const strictLink = resendingLink(strictServer);
  const strict = await SecureSession.open(strictLink, { reinitWhenGone: false });
  strictLink.resendNext = { between: () => strictServer.sessions.clear() };
  assertOutcomeUnknown(await rejection(strict.call('delete_wallet', {})), 'delete_wallet');
});

test('a resend that fails too (the server went away): OutcomeUnknown for a call, the plain error for an init', async () => {
  const server = new FakeServer();
  const link = resendingLink(server);
  const unreachable = () => new KeywardError('Unreachable', 'no keyward server is running at fake', { code: -32050 });
  const secure = await SecureSession.open(link);
  link.resendNext = { fail: unreachable };
  const error = await rejection(secure.call('delete_wallet', { name: 'w' }));
  assertOutcomeUnknown(error, 'delete_wallet');
  assert.equal(error.cause.variant, 'Unreachable');
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'delete_wallet']);
  // A plaintext init whose resend fails: just that failure (no call could have run).
  link.resendNext = { fail: unreachable };
  await assert.rejects(SecureSession.open(link), (e) => e instanceof KeywardError && e.variant === 'Unreachable');
});

test('a resent exchange is fine when its answer is an answer: a plaintext init, or a call the server had not seen', async () => {
  const server = new FakeServer();
  const link = resendingLink(server);
  link.resendNext = {};
  const secure = await SecureSession.open(link);
  // Two sessions were made; the second one's answer came back and is used.
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'init']);
  assert.equal(secure.sessionId, 's2');
  assert.deepEqual(await secure.call('ping', { a: 1 }), { echo: { a: 1 } });
  link.resendNext = { reached: false };
  assert.deepEqual(await secure.call('ping', { b: 2 }), { echo: { b: 2 } });
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'init', 'ping', 'ping']);
  // A resent re-key the server had run: the next call starts a new session (the re-key's answer is lost).
  link.resendNext = {};
  await assert.rejects(secure.rekey(), (e) => e instanceof KeywardError);
  assert.deepEqual(await secure.call('ping', { c: 3 }), { echo: { c: 3 } });
  assert.deepEqual(server.log.map(([m]) => m).slice(4), ['init_secure_api', 'undecryptable', 'init', 'ping']);
});

// ---------------------------------------------------------------------------------------------------
// A re-key whose answer is lost: the server may have switched keys.

/** A link over `server` whose `drop` hook may swallow an answer after the server produced it. */
function droppingLink(server) {
  const link = {
    drop: null,
    async exchange(body, session, timeoutMs) {
      const answer = await server.exchange(body, session, timeoutMs);
      const last = server.log.at(-1)?.[0];
      if (link.drop && last === link.drop.method) {
        const { make } = link.drop;
        link.drop = null;
        return make(answer);
      }
      return answer;
    },
    close: async () => {},
  };
  return link;
}

const lostAnswers = {
  timeout: () => {
    throw new KeywardError('Timeout', 'no answer from the server within 100 ms', { code: -32050 });
  },
  transport: () => {
    throw new KeywardError('Closed', 'the server closed the connection before it answered', { code: -32050 });
  },
  unusable: () => ({ body: new TextEncoder().encode('<html>proxy error</html>'), session: null }),
};

for (const [how, make] of Object.entries(lostAnswers)) {
  test(`a re-key the server ran whose answer is lost (${how}): the next call starts a new session`, async () => {
    const server = new FakeServer();
    const link = droppingLink(server);
    const secure = await SecureSession.open(link, { rekeyAfter: 2 });
    await secure.call('ping', { i: 1 });
    await secure.call('ping', { i: 2 });
    link.drop = { method: 'init_secure_api', make };
    // The call due after the re-key was not sent, and says so.
    const error = await rejection(secure.call('ping', { i: 3 }));
    assert.ok(error instanceof KeywardError, String(error));
    assert.match(error.message, /re-key/);
    assert.match(error.message, /not sent/);
    assert.deepEqual(server.log.map(([m]) => m), ['init', 'ping', 'ping', 'init_secure_api']);
    // The server is on a key this client never got: without a new session every call would fail
    // with −32002 from now on.
    for (let i = 4; i < 8; i++) assert.deepEqual(await secure.call('ping', { i }), { echo: { i } });
    assert.deepEqual(server.log.map(([m]) => m).slice(4), ['init', 'ping', 'ping', 'init_secure_api', 'ping', 'ping']);
    assert.equal(secure.sessionId, 's2');

    // The same through rekey() by hand.
    link.drop = { method: 'init_secure_api', make };
    await assert.rejects(secure.rekey(), (e) => e instanceof KeywardError);
    assert.deepEqual(await secure.call('ping', { i: 9 }), { echo: { i: 9 } });
    assert.deepEqual(server.log.map(([m]) => m).slice(10), ['init_secure_api', 'init', 'ping']);
  });
}

test('a re-key the server refused under the old key keeps the session (no new init)', async () => {
  const server = new FakeServer();
  const realExchange = server.exchange.bind(server);
  let refuse = false;
  // The server answers the re-key with an error sealed under the old key, and keeps that key.
  server.exchange = async (body, session, timeoutMs) => {
    if (!refuse) return realExchange(body, session, timeoutMs);
    refuse = false;
    const request = JSON.parse(dec(body));
    const key = server.sessions.get(session);
    const plain = JSON.parse(dec(await aesOpen(key, fromHex(request.params.nonce), fromBase64(request.params.body_enc))));
    server.log.push(['refused ' + plain.method, session]);
    const nonce = new Uint8Array(12).fill(0x77);
    const sealed = await aesSeal(key, nonce, json({ id: plain.id, jsonrpc: '2.0', error: { code: -32099, message: 'Busy: try again' } }));
    return { body: json({ id: request.id, jsonrpc: '2.0', result: { Ok: { nonce: toHex(nonce), body_enc: toBase64(sealed) } } }), session: null };
  };
  const secure = await SecureSession.open(server);
  refuse = true;
  await assert.rejects(secure.rekey(), (e) => e instanceof KeywardError && e.variant === 'Busy');
  assert.deepEqual(await secure.call('ping', {}), { echo: {} });
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'refused init_secure_api', 'ping']);
  assert.equal(secure.sessionId, 's1');
});

test('a call on a new key the server cannot decrypt (−32002) right after a re-key: one new init, the call resent once', async () => {
  const server = new FakeServer();
  const secure = await SecureSession.open(server, { rekeyAfter: 1 });
  await secure.call('ping', { i: 1 });
  // The server answers re-keys but keeps its old key: the client's new key is one it does not have.
  server.ignoreRekeys = true;
  assert.deepEqual(await secure.call('ping', { i: 2 }), { echo: { i: 2 } });
  assert.deepEqual(server.log.map(([m]) => m), ['init', 'ping', 'init_secure_api', 'undecryptable', 'init', 'ping']);
  // Outside that window a −32002 goes to the caller as before.
  const plain = await SecureSession.open(new FakeServer());
  const raw = new FakeServer();
  const other = await SecureSession.open(raw);
  raw.sessions.set('s1', (await raw.newKey(toHex(secp256k1.getPublicKey(secp256k1.utils.randomSecretKey(), true)))).key);
  await assert.rejects(other.call('ping', {}), (e) => e instanceof KeywardError && e.code === -32002 && e.variant === 'Envelope');
  assert.deepEqual(raw.log.map(([m]) => m), ['init', 'undecryptable']);
  await plain.close();
});
