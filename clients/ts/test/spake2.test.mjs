// SPAKE2 and the pairing exchange's cryptography against the Rust side, byte for byte:
// spec/vectors/pairing.json (made by pairing/tests/ts_vectors.rs with crate spake2 0.4 and fixed
// randomness) and the crate's own known answers (its src/lib.rs tests, shared with python-spake2).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  ClientExchange,
  ID_CLIENT,
  ID_SERVER,
  PAIR_LABEL,
  confirmation,
  deriveKeys,
  encodeFinish,
  encodeHello,
  encodeOutcome,
  encodeReply,
  encodeDone,
  encodeRequest,
  open,
  parseCode,
  parseDone,
  parseFinish,
  parseHello,
  parseOutcome,
  parseReply,
  parseRequest,
  seal,
} from '../dist/pair-exchange.js';
import {
  Spake2,
  Spake2Error,
  passwordToScalar,
  scalarToBytes,
} from '../dist/spake2.js';
import { fromBase64, toBase64 } from '../dist/bytes.js';
import { KeywardError } from '../dist/errors.js';

process.on('unhandledRejection', (reason) => {
  assert.fail(`unhandled rejection: ${reason}`);
});

const here = dirname(fileURLToPath(import.meta.url));
const vectors = JSON.parse(readFileSync(resolve(here, '../../../spec/vectors/pairing.json'), 'utf8'));
const enc = new TextEncoder();
const dec = new TextDecoder();
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const unhex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

/** A random(n) that hands out `bytes` once (the fixed RNG of the Rust side). */
function fixed(bytes) {
  let used = false;
  return (n) => {
    assert.equal(used, false, 'drawn once');
    assert.equal(n, bytes.length, 'spake2 draws 64 bytes');
    used = true;
    return Uint8Array.from(bytes);
  };
}

/** The little-endian 64 bytes whose reduction is `scalar` (for the crate's decimal scalars). */
function scalarBytes(decimal) {
  const out = new Uint8Array(64);
  out.set(scalarToBytes(BigInt(decimal)));
  return out;
}

test('the crate\'s known answers: password scalar, messages and key (spake2 0.4 test_asymmetric)', () => {
  const pw = enc.encode('password');
  assert.equal(
    passwordToScalar(pw),
    3515301705789368674385125653994241092664323519848410154015274772661223168839n,
  );
  const a = Spake2.startA(pw, enc.encode('idA'), enc.encode('idB'),
    fixed(scalarBytes('2611694063369306139794446498317402240796898290761098242657700742213257926693')));
  const b = Spake2.startB(pw, enc.encode('idA'), enc.encode('idB'),
    fixed(scalarBytes('7002393159576182977806091886122272758628412261510164356026361256515836884383')));
  assert.equal(hex(a.message), '416fc960df73c9cf8ed7198b0c9534e2e96a5984bfc5edc023fd24dacf371f2af9');
  assert.equal(hex(b.message), '42354e97b88406922b1df4bea1d7870f17aed3dba7c720b313edae315b00959309');
  const ka = a.finish(b.message);
  const kb = b.finish(a.message);
  assert.equal(hex(ka), '712295de7219c675ddd31942184aa26e0a957cf216bc230d165b215047b520c1');
  assert.deepEqual(ka, kb);
});

test('SPAKE2 refuses what the crate refuses: length, side, a y that is no point', () => {
  const pw = enc.encode('password');
  const start = () => Spake2.startA(pw, enc.encode('a'), enc.encode('b'));
  const b = Spake2.startB(pw, enc.encode('a'), enc.encode('b'));
  assert.throws(() => start().finish(b.message.subarray(0, 32)), (e) => e instanceof Spake2Error && e.reason === 'WrongLength');
  assert.throws(() => start().finish(start().message), (e) => e instanceof Spake2Error && e.reason === 'BadSide');
  // y = 2 is not the y of a curve point.
  const bad = new Uint8Array(33);
  bad[0] = 0x42;
  bad[1] = 2;
  assert.throws(() => start().finish(bad), (e) => e instanceof Spake2Error && e.reason === 'CorruptMessage');
  const a = start();
  a.finish(b.message);
  assert.throws(() => a.finish(b.message), /once/);
});

test('codes normalize as the Rust side reads them', () => {
  assert.ok(vectors.codes.length >= 10);
  for (const { typed, normalized, id } of vectors.codes) {
    const code = parseCode(typed);
    if (normalized === null) {
      assert.equal(code, null, typed);
    } else {
      assert.equal(dec.decode(code.password), normalized, typed);
      assert.equal(code.id, id, typed);
    }
  }
});

test('every exchange of spec/vectors/pairing.json, byte for byte', async () => {
  assert.equal(vectors.identity_a, ID_CLIENT);
  assert.equal(vectors.identity_b, ID_SERVER);
  assert.equal(vectors.aad, PAIR_LABEL);
  assert.ok(vectors.exchanges.length >= 2);
  for (const v of vectors.exchanges) {
    const code = parseCode(v.code);
    assert.equal(dec.decode(code.password), v.password);
    assert.equal(code.id, v.id);

    // SPAKE2, both sides.
    const a = Spake2.startA(code.password, enc.encode(ID_CLIENT), enc.encode(ID_SERVER), fixed(unhex(v.rng_a)));
    const b = Spake2.startB(code.password, enc.encode(ID_CLIENT), enc.encode(ID_SERVER), fixed(unhex(v.rng_b)));
    assert.equal(hex(a.message), v.msg_a, v.about);
    assert.equal(hex(b.message), v.msg_b, v.about);
    const key = a.finish(b.message);
    assert.equal(hex(key), v.key);
    assert.equal(hex(b.finish(a.message)), v.key);

    // Keys, confirmations, sealed messages.
    const keys = deriveKeys(key);
    assert.deepEqual(
      { server_confirm: hex(keys.serverConfirm), client_confirm: hex(keys.clientConfirm),
        client_to_server: hex(keys.clientToServer), server_to_client: hex(keys.serverToClient) },
      v.keys,
    );
    assert.equal(hex(confirmation(keys.serverConfirm, 'server', v.id, a.message, b.message)), v.confirm_server);
    assert.equal(hex(confirmation(keys.clientConfirm, 'client', v.id, a.message, b.message)), v.confirm_client);
    assert.equal(hex(await seal(keys.clientToServer, enc.encode(v.request))), v.sealed_request);
    assert.equal(hex(await seal(keys.serverToClient, enc.encode(v.outcome))), v.sealed_outcome);
    assert.equal(dec.decode(await open(keys.clientToServer, unhex(v.sealed_request))), v.request);
    assert.equal(dec.decode(await open(keys.serverToClient, unhex(v.sealed_outcome))), v.outcome);
    assert.equal(await open(keys.serverToClient, unhex(v.sealed_request)), null, 'the other direction\'s key does not open it');

    // The messages: what this side writes is the Rust side's bytes; what it reads round-trips.
    const request = parseRequest(enc.encode(v.request));
    assert.equal(dec.decode(encodeRequest(request)), v.request);
    const outcome = parseOutcome(enc.encode(v.outcome));
    assert.equal(dec.decode(encodeOutcome(outcome)), v.outcome);
    assert.equal(dec.decode(encodeHello(parseHello(enc.encode(v.frames.hello)))), v.frames.hello);
    assert.equal(dec.decode(encodeReply(parseReply(enc.encode(v.frames.reply)))), v.frames.reply);
    assert.equal(dec.decode(encodeFinish(parseFinish(enc.encode(v.frames.finish)))), v.frames.finish);
    assert.equal(dec.decode(encodeDone(parseDone(enc.encode(v.frames.done)))), v.frames.done);

    // The client's side as pair() drives it: Hello, confirm the Reply, Finish, open Done.
    const client = ClientExchange.start(v.code, fixed(unhex(v.rng_a)));
    assert.equal(dec.decode(client.hello), v.frames.hello);
    client.confirm(enc.encode(v.frames.reply));
    assert.equal(dec.decode(await client.finish(request)), v.frames.finish);
    if ('ok' in outcome) {
      assert.deepEqual(await client.outcome(enc.encode(v.frames.done)), outcome.ok);
    } else {
      await assert.rejects(client.outcome(enc.encode(v.frames.done)), (e) =>
        e instanceof KeywardError && e.variant === 'Refused' && e.message.includes(outcome.error));
    }
  }
});

test('a wrong code: the client\'s check of the server\'s confirmation fails (vector)', () => {
  const v = vectors.wrong_code;
  const client = ClientExchange.start(v.client_code, fixed(unhex(v.rng_a)));
  assert.equal(hex(parseHello(client.hello).spake), v.msg_a);
  const a = Spake2.startA(parseCode(v.client_code).password, enc.encode(ID_CLIENT), enc.encode(ID_SERVER), fixed(unhex(v.rng_a)));
  const b = Spake2.startB(parseCode(v.server_code).password, enc.encode(ID_CLIENT), enc.encode(ID_SERVER), fixed(unhex(v.rng_b)));
  assert.equal(hex(b.message), v.msg_b);
  assert.equal(hex(a.finish(b.message)), v.client_key);
  assert.equal(hex(b.finish(a.message)), v.server_key);
  assert.throws(() => client.confirm(enc.encode(v.reply)), (e) => e instanceof KeywardError && e.variant === 'WrongCode');
});

test('messages are strict: unknown or missing fields, loose base64, oversize are refused', () => {
  const ok = '{"spake":"QUJD","confirm":"QUJD"}';
  assert.deepEqual(parseReply(enc.encode(ok)).spake, enc.encode('ABC'));
  for (const bad of [
    '{"spake":"QUJD","confirm":"QUJD","x":1}',
    '{"spake":"QUJD"}',
    '{"spake":"QUJ","confirm":"QUJD"}',
    '{"spake":"QUJ=","confirm":"QUJD"}', // a stray bit after the last byte ("QUI=" is canonical)
    '{"spake":"QUJD\\n","confirm":"QUJD"}',
    '{"spake":1,"confirm":"QUJD"}',
    '[]',
    'null',
    'not json',
  ]) {
    assert.throws(() => parseReply(enc.encode(bad)), bad);
  }
  assert.throws(() => parseReply(new Uint8Array(16 * 1024 + 1).fill(0x20)));
  assert.throws(() => parseOutcome(enc.encode('{"ok":{"name":"a","role":"r","certificate":"c","ca_certificate":"c","endpoints":{"x":"y"}}}')));
  assert.throws(() => parseOutcome(enc.encode('{"ok":{},"error":"x"}')));
  assert.deepEqual(parseOutcome(enc.encode('{"ok":{"name":"a","role":"r","certificate":"c","ca_certificate":"d","endpoints":{}}}')).ok.endpoints,
    { url: null, quic: null });
  assert.deepEqual(fromBase64('QUI='), enc.encode('AB'));
  for (let n = 0; n < 40; n++) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 37 + n) & 255);
    assert.deepEqual(fromBase64(toBase64(bytes)), bytes);
    assert.equal(toBase64(bytes), Buffer.from(bytes).toString('base64'));
  }
});

test('a malformed code is a WrongCode error before anything is computed', () => {
  for (const typed of ['', '0123Z-YJNRU', '0123Z-YJNR9X']) {
    assert.throws(() => ClientExchange.start(typed), (e) => e instanceof KeywardError && e.variant === 'WrongCode');
  }
});
