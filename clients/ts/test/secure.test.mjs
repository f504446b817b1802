// SecureSession over an in-process Link that plays a V3 server: the session header, re-keying after
// N calls, one transparent re-init and resend on −32001, the queue, timeouts of links that never
// answer, and links that throw something other than a KeywardError.

import './helpers/guard.mjs';

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { secp256k1 } from '@noble/curves/secp256k1.js';

import { KeywardError, Keyward, SecureSession } from '../dist/index.js';
import { aesOpen, aesSeal, importAesKey, sharedX } from '../dist/session.js';
import { fromBase64, fromHex, toBase64, toHex } from '../dist/bytes.js';
import { dec, json } from './helpers/fake.mjs';

/** A tiny V3 server as a Link: sessions by header, re-keying, a switch to forget every session. */
class FakeServer {
  constructor() {
    this.sessions = new Map();
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
    const inner = JSON.parse(dec(await aesOpen(key, fromHex(request.params.nonce), fromBase64(request.params.body_enc))));
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
    if (next) this.sessions.set(session, next);
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
