// The sans-IO session against the spec's vectors, and against every kind of bad answer.

import './helpers/guard.mjs';

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { secp256k1 } from '@noble/curves/secp256k1.js';

import { KeywardError, Session, REMEMBERED_NONCES } from '../dist/index.js';
import { aesOpen, aesSeal, importAesKey, sharedX } from '../dist/session.js';
import { fromBase64, fromHex, toBase64, toHex } from '../dist/bytes.js';
import { chachaRandom } from './helpers/chacha20.mjs';
import { dec, enc, freshNonce, innerOf, json, okAnswer, pairedSession, sealedAnswer, serverKeyFor } from './helpers/fake.mjs';

const vectors = (name) => JSON.parse(readFileSync(fileURLToPath(new URL(`../../../spec/vectors/${name}`, import.meta.url)), 'utf8'));

/** Asserts that `promise` rejects with a KeywardError (and no other type), optionally matching. */
async function refused(promise, { variant, message, code } = {}) {
  let caught;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof KeywardError, `expected a KeywardError, got ${caught === undefined ? 'success' : caught?.constructor?.name}: ${caught}`);
  if (variant) assert.equal(caught.variant, variant, caught.message);
  if (code !== undefined) assert.equal(caught.code, code, caught.message);
  if (message) assert.match(caught.message, message);
  return caught;
}

test('grin-v3 ecdh vectors: the shared key is the X coordinate', () => {
  for (const v of vectors('grin-v3.json').ecdh) {
    const serverPub = secp256k1.getPublicKey(fromHex(v.server_sk), true);
    if (v.server_pub_compressed) assert.equal(toHex(serverPub), v.server_pub_compressed);
    assert.equal(toHex(sharedX(fromHex(v.client_sk), serverPub)), v.shared_key);
    if (v.client_pub_compressed) {
      assert.equal(toHex(secp256k1.getPublicKey(fromHex(v.client_sk), true)), v.client_pub_compressed);
      assert.equal(toHex(sharedX(fromHex(v.server_sk), fromHex(v.client_pub_compressed))), v.shared_key);
    }
  }
});

test('grin-v3 envelope vectors: AES-256-GCM, empty AAD, standard base64', async () => {
  for (const v of vectors('grin-v3.json').envelope) {
    const key = await importAesKey(fromHex(v.shared_key));
    const sealed = await aesSeal(key, fromHex(v.nonce), enc(v.plaintext));
    assert.equal(toBase64(sealed), v.body_enc);
    assert.equal(dec(await aesOpen(key, fromHex(v.nonce), fromBase64(v.body_enc))), v.plaintext);
  }
});

test('transcript.json: the session writes the Rust client\'s requests byte for byte and opens every answer', async () => {
  const transcript = vectors('transcript.json');
  // The Rust client's rng: ChaCha20Rng seeded with 0x42 × 32 (core/tests/vectors.rs).
  const session = new Session({ random: chachaRandom(new Uint8Array(32).fill(0x42)) });
  const [init, ...steps] = transcript.steps;
  assert.equal(dec(session.initRequest()), init.request);
  await session.handleInitAnswer(enc(init.answer));
  let checked = 0;
  let firstAccounts = null;
  for (const step of steps) {
    if (!('params' in step)) {
      // The replayed envelope: the same bytes as the first accounts request, refused as a replay.
      assert.equal(step.request, firstAccounts);
      const { pending } = await session.seal('accounts', { token: 'x' });
      await refused(session.open(pending, enc(step.answer)), { variant: 'Replay', code: -32002, message: /replay/ });
      continue;
    }
    const { body, pending } = await session.seal(step.method, step.params);
    assert.equal(dec(body), step.request, `${step.method}: request bytes`);
    if (step.method === 'accounts' && firstAccounts === null) firstAccounts = step.request;
    assert.deepEqual(await session.openRaw(pending, enc(step.answer)), step.inner_answer, `${step.method}: inner answer`);
    checked += 1;
  }
  assert.equal(checked, steps.length - 1);
});

test('transcript errors come out as KeywardErrors with the server\'s variant and a fix', async () => {
  const transcript = vectors('transcript.json');
  const session = new Session({ random: chachaRandom(new Uint8Array(32).fill(0x42)) });
  session.initRequest();
  await session.handleInitAnswer(enc(transcript.steps[0].answer));
  const seen = [];
  for (const step of transcript.steps.slice(1)) {
    if (!('params' in step)) continue;
    const { pending } = await session.seal(step.method, step.params);
    try {
      await session.open(pending, enc(step.answer));
    } catch (error) {
      assert.ok(error instanceof KeywardError);
      seen.push([step.method, error.variant, error.code, error.message]);
    }
  }
  assert.equal(seen.length, 2);
  assert.deepEqual(seen[0].slice(0, 3), ['open_wallet', 'Lifecycle', -32099]);
  assert.match(seen[0][3], /the wallet does not exist or the password is wrong/);
  assert.deepEqual(seen[1].slice(0, 3), ['accounts', 'Lifecycle', -32099]);
  assert.match(seen[1][3], /open it with openWallet/);
});

test('a sealed request carries the call, with keys sorted and Uint8Array secrets as strings', async () => {
  const { session, key } = await pairedSession();
  const password = enc('pa"ss\\\n\u0001wörd');
  const before = password.slice();
  const { body, pending } = await session.seal('create_wallet', { password, name: null, mnemonic: null, mnemonic_length: 16 });
  assert.deepEqual(password, before, 'the caller\'s array is left alone');
  const { outer, inner } = await innerOf(key, body);
  assert.deepEqual(Object.keys(outer), ['id', 'jsonrpc', 'method', 'params']);
  assert.deepEqual(Object.keys(outer.params), ['body_enc', 'nonce']);
  assert.equal(outer.id, pending.outerId);
  assert.deepEqual(inner, { id: pending.innerId, jsonrpc: '2.0', method: 'create_wallet', params: { mnemonic: null, mnemonic_length: 16, name: null, password: 'pa"ss\\\n\u0001wörd' } });
  assert.deepEqual(Object.keys(inner.params), ['mnemonic', 'mnemonic_length', 'name', 'password']);
});

test('the plaintext buffer is zeroed once sealed', async () => {
  const { session } = await pairedSession();
  const subtle = globalThis.crypto.subtle;
  const original = subtle.encrypt;
  const seen = [];
  subtle.encrypt = function (algorithm, key, data) {
    seen.push(data);
    return original.call(subtle, algorithm, key, data);
  };
  try {
    await session.seal('open_wallet', { name: 'w', password: 'correct horse battery' });
  } finally {
    delete subtle.encrypt;
    if (subtle.encrypt !== original) subtle.encrypt = original;
  }
  assert.equal(seen.length, 1);
  const buffer = new Uint8Array(seen[0].buffer);
  assert.ok(buffer.every((b) => b === 0), 'the plaintext buffer still holds bytes after sealing');
});

test('params that are not JSON are refused locally with InvalidParams', async () => {
  const { session } = await pairedSession();
  const circular = {};
  circular.self = circular;
  for (const params of [{ x: NaN }, { x: () => 1 }, { x: 1n }, { x: new Date() }, circular, { x: new Uint8Array([0xff, 0xfe]) }]) {
    await refused(session.seal('m', params), { variant: 'InvalidParams' });
  }
});

test('an answer that is malformed in any way is a KeywardError, never another type', async () => {
  const { session, key } = await pairedSession();
  const cases = [
    ['not UTF-8', () => new Uint8Array([0xff, 0xfe, 0x7b])],
    ['not JSON', () => enc('<html>')],
    ['empty', () => new Uint8Array(0)],
    ['a number', () => enc('5')],
    ['null', () => enc('null')],
    ['an array', () => enc('[]')],
    ['an empty object', () => enc('{}')],
    ['no result', (p) => json({ id: p.outerId, jsonrpc: '2.0' })],
    ['result without Ok', (p) => json({ id: p.outerId, result: {} })],
    ['Ok a string', (p) => json({ id: p.outerId, result: { Ok: 'x' } })],
    ['Ok null', (p) => json({ id: p.outerId, result: { Ok: null } })],
    ['nonce a number', (p) => json({ id: p.outerId, result: { Ok: { nonce: 5, body_enc: 'AAAA' } } })],
    ['no body_enc', (p) => json({ id: p.outerId, result: { Ok: { nonce: '00'.repeat(12) } } })],
    ['short nonce', (p) => json({ id: p.outerId, result: { Ok: { nonce: '00'.repeat(11), body_enc: 'AAAA' } } })],
    ['odd nonce', (p) => json({ id: p.outerId, result: { Ok: { nonce: '0'.repeat(25), body_enc: 'AAAA' } } })],
    ['non-hex nonce', (p) => json({ id: p.outerId, result: { Ok: { nonce: 'zz'.repeat(12), body_enc: 'AAAA' } } })],
    ['huge nonce', (p) => json({ id: p.outerId, result: { Ok: { nonce: '00'.repeat(600), body_enc: 'AAAA' } } })],
    ['bad base64', (p) => json({ id: p.outerId, result: { Ok: { nonce: '01'.repeat(12), body_enc: '!!!!' } } })],
    ['unpadded base64', (p) => json({ id: p.outerId, result: { Ok: { nonce: '01'.repeat(12), body_enc: 'AAA' } } })],
    ['shorter than a tag', (p) => json({ id: p.outerId, result: { Ok: { nonce: '01'.repeat(12), body_enc: 'AAAA' } } })],
    ['does not authenticate', (p) => json({ id: p.outerId, result: { Ok: { nonce: '01'.repeat(12), body_enc: toBase64(new Uint8Array(40)) } } })],
    ['under another key', async (p) => sealedAnswer(await importAesKey(new Uint8Array(32).fill(7)), p, { id: p.innerId, result: { Ok: 1 } })],
    ['inner not JSON', (p) => sealedAnswer(key, p, enc('not json'))],
    ['inner not UTF-8', (p) => sealedAnswer(key, p, new Uint8Array([0xc3, 0x28]))],
    ['inner a number', (p) => sealedAnswer(key, p, 7)],
    ['inner an array', (p) => sealedAnswer(key, p, [{ id: p.innerId, result: { Ok: 1 } }])],
    ['inner without result', (p) => sealedAnswer(key, p, { id: p.innerId, jsonrpc: '2.0' })],
    ['inner error not an object', (p) => sealedAnswer(key, p, { id: p.innerId, error: 'bad' })],
    ['inner error with a string code', (p) => sealedAnswer(key, p, { id: p.innerId, error: { code: '-32099', message: 'x' } })],
    ['inner error without message', (p) => sealedAnswer(key, p, { id: p.innerId, error: { code: -32099 } })],
    ['outer error not an object', (p) => json({ id: p.outerId, error: [] })],
    ['outer error with a float code', (p) => json({ id: p.outerId, error: { code: 1.5, message: 'x' } })],
    ['__proto__ members', (p) => enc(`{"id":${p.outerId},"__proto__":{"result":{"Ok":1}}}`)],
  ];
  for (const [name, make] of cases) {
    const { pending } = await session.seal('accounts', { token: 't' });
    const body = await make(pending);
    const error = await refused(session.open(pending, body));
    assert.ok(['Protocol'].includes(error.variant), `${name}: variant ${error.variant}: ${error.message}`);
  }
  // And the session still works afterwards.
  const { pending } = await session.seal('accounts', { token: 't' });
  assert.equal(await session.open(pending, await okAnswer(key, pending, 'fine')), 'fine');
});

test('a reflected answer (the request\'s own nonce) is refused', async () => {
  const { session, key } = await pairedSession();
  const { pending } = await session.seal('list_wallets', {});
  await refused(session.open(pending, await okAnswer(key, pending, [], { nonce: pending.nonce })), { variant: 'Protocol', message: /reflected/ });
});

test('a replayed answer nonce is refused, also one of an earlier call', async () => {
  const { session, key } = await pairedSession();
  const nonce = freshNonce();
  const first = await session.seal('list_wallets', {});
  assert.deepEqual(await session.open(first.pending, await okAnswer(key, first.pending, [], { nonce })), []);
  const second = await session.seal('list_wallets', {});
  await refused(session.open(second.pending, await okAnswer(key, second.pending, [], { nonce })), { variant: 'Protocol', message: /replayed/ });
  // The very same answer bytes again, for the call they answered.
  const third = await session.seal('list_wallets', {});
  const answer = await okAnswer(key, third.pending, ['x']);
  assert.deepEqual(await session.open(third.pending, answer), ['x']);
  await refused(session.open(third.pending, answer), { message: /replayed/ });
  assert.equal(REMEMBERED_NONCES, 65_536);
});

test('mismatched ids are refused; an unattributed inner error and a plaintext error with another id are not', async () => {
  const { session, key } = await pairedSession();
  let sealed = await session.seal('accounts', { token: 't' });
  await refused(session.open(sealed.pending, await okAnswer(key, sealed.pending, 1, { outerId: sealed.pending.outerId + 100 })), { message: /id is not the request's/ });
  sealed = await session.seal('accounts', { token: 't' });
  await refused(session.open(sealed.pending, await sealedAnswer(key, sealed.pending, { id: sealed.pending.innerId + 1, result: { Ok: 1 } })), { message: /inner answer's id/ });
  sealed = await session.seal('accounts', { token: 't' });
  await refused(session.open(sealed.pending, await sealedAnswer(key, sealed.pending, { id: 'x', result: { Ok: 1 } })), { message: /inner answer's id/ });
  // An inner error the server could not attribute (id null): accepted as the error it is.
  sealed = await session.seal('accounts', { token: 't' });
  await refused(session.open(sealed.pending, await sealedAnswer(key, sealed.pending, { id: null, jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request: x' } })), {
    variant: 'InvalidRequest',
    code: -32600,
  });
  // A plaintext envelope error with grin's id "1": the server's error, not an id mismatch.
  sealed = await session.seal('accounts', { token: 't' });
  await refused(session.open(sealed.pending, json({ id: '1', jsonrpc: '2.0', error: { code: -32001, message: 'Encryption must be enabled' } })), {
    variant: 'SessionGone',
    code: -32001,
  });
});

test('init answers that are not a server key are refused', async () => {
  for (const answer of [
    { id: 1, result: { Ok: 'zz' } },
    { id: 1, result: { Ok: '02' + '00'.repeat(32) } },
    { id: 1, result: { Ok: 5 } },
    { id: 1, result: { Ok: '02' + '11'.repeat(31) } },
    { id: 1, error: { code: -32602, message: 'Invalid params: ecdh_pubkey is not hex' } },
    { id: 1 },
  ]) {
    const session = new Session();
    session.initRequest();
    await refused(session.handleInitAnswer(json(answer)));
    assert.equal(session.isReady, false);
  }
  await refused(new Session().handleInitAnswer(json({ id: 1, result: { Ok: '02' } })), { variant: 'NotInitialized' });
  await refused(new Session().seal('x', {}), { variant: 'NotInitialized' });
});

test('re-keying: the answer opens under the old key, the next call goes under the new one', async () => {
  const { session, key } = await pairedSession();
  const nonce = freshNonce();
  const before = await session.seal('list_wallets', {});
  await session.open(before.pending, await okAnswer(key, before.pending, [], { nonce }));

  const { body, pending } = await session.sealReinit();
  const { inner } = await innerOf(key, body);
  assert.equal(inner.method, 'init_secure_api');
  assert.deepEqual(Object.keys(inner), ['id', 'jsonrpc', 'method', 'params']);
  const next = await serverKeyFor(inner);
  assert.equal(await session.open(pending, await okAnswer(key, pending, next.pub)), next.pub);

  const after = await session.seal('list_wallets', {});
  const { inner: call } = await innerOf(next.key, after.body);
  assert.equal(call.method, 'list_wallets');
  // Nonces remembered under the old key are forgotten with it.
  assert.deepEqual(await session.open(after.pending, await okAnswer(next.key, after.pending, ['n'], { nonce })), ['n']);
  // An error answer to a re-key keeps the old key.
  const again = await session.sealReinit();
  await refused(session.open(again.pending, await sealedAnswer(next.key, again.pending, { id: again.pending.innerId, error: { code: -32602, message: 'Invalid params: x' } })), {
    variant: 'InvalidParams',
  });
  const still = await session.seal('list_wallets', {});
  assert.equal((await innerOf(next.key, still.body)).inner.method, 'list_wallets');
});

test('the random source is used for keys and nonces, and a bad one is refused', async () => {
  const draws = [];
  const random = (n) => {
    draws.push(n);
    return globalThis.crypto.getRandomValues(new Uint8Array(n));
  };
  const { session } = await pairedSession({ random });
  await session.seal('x', {});
  assert.deepEqual(draws, [32, 12]);
  const broken = new Session({ random: (n) => new Uint8Array(n - 1) });
  assert.throws(() => broken.initRequest(), KeywardError);
});

test('a Uint8Array secret is written with serde_json\'s escapes for every control character', async () => {
  const { session, key } = await pairedSession();
  const all = Array.from({ length: 0x80 }, (_, i) => String.fromCharCode(i)).join('') + 'é€😀';
  const { body } = await session.seal('m', { s: enc(all), t: all });
  const { inner } = await innerOf(key, body);
  assert.equal(inner.params.s, all);
  const raw = dec(await aesOpen(key, fromHex(JSON.parse(dec(body)).params.nonce), fromBase64(JSON.parse(dec(body)).params.body_enc)));
  const s = raw.slice(raw.indexOf('"s":') + 4, raw.indexOf(',"t":'));
  const t = raw.slice(raw.indexOf('"t":') + 4, raw.length - 2);
  assert.equal(s, t, 'bytes and string give the same JSON');
});
