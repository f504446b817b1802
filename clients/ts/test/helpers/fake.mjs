// An in-process V3 "server" for the session's unit tests: it answers init_secure_api with a key of
// its own, so the test holds the session key and can forge any answer, well-formed or not.

import { secp256k1 } from '@noble/curves/secp256k1.js';

import { Session, importAesKey, sharedX, aesSeal, aesOpen } from '../../dist/session.js';
import { toBase64, toHex, fromHex, fromBase64 } from '../../dist/bytes.js';

export const enc = (text) => new TextEncoder().encode(text);
export const dec = (bytes) => new TextDecoder().decode(bytes);
export const json = (value) => enc(JSON.stringify(value));

/** A ready Session and the server's side of it: its key, and helpers to read requests and forge answers. */
export async function pairedSession(options = {}) {
  const session = new Session(options);
  const request = JSON.parse(dec(session.initRequest()));
  const server = await serverKeyFor(request);
  await session.handleInitAnswer(json({ id: request.id, jsonrpc: '2.0', result: { Ok: server.pub } }));
  return { session, ...server };
}

/** The server's key pair and the shared AES key for an init request (plaintext or inner). */
export async function serverKeyFor(initRequest) {
  const secret = secp256k1.utils.randomSecretKey();
  const pub = toHex(secp256k1.getPublicKey(secret, true));
  const key = await importAesKey(sharedX(secret, fromHex(initRequest.params.ecdh_pubkey)));
  return { pub, key };
}

/** The inner request of a sealed body, decrypted with `key`. */
export async function innerOf(key, body) {
  const outer = JSON.parse(dec(body));
  const plain = await aesOpen(key, fromHex(outer.params.nonce), fromBase64(outer.params.body_enc));
  return { outer, inner: JSON.parse(dec(plain)) };
}

let counter = 1;
/** A fresh 12-byte nonce (distinct per call). */
export function freshNonce() {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setUint32(8, counter++);
  nonce[0] = 0xaa;
  return nonce;
}

/** An encrypted answer to `pending` carrying `inner` (an object or raw bytes). */
export async function sealedAnswer(key, pending, inner, { nonce = freshNonce(), outerId = pending.outerId } = {}) {
  const plain = inner instanceof Uint8Array ? inner : json(inner);
  const body_enc = toBase64(await aesSeal(key, nonce, plain));
  return json({ id: outerId, jsonrpc: '2.0', result: { Ok: { nonce: toHex(nonce), body_enc } } });
}

/** The usual Ok answer to `pending`. */
export function okAnswer(key, pending, value, options) {
  return sealedAnswer(key, pending, { id: pending.innerId, jsonrpc: '2.0', result: { Ok: value } }, options);
}
