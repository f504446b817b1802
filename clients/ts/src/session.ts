// The client side of the Owner API V3 secure session, sans-IO (the Rust core's `Client`, in
// core/src/client.rs): build the init request, derive the key, seal requests, open answers, and
// refuse answers that are not fresh, not authentic or not ours. No transport inside: a `Link`
// (secure.ts) carries the bytes.
//
//   const session = new Session();
//   send(session.initRequest())                → await session.handleInitAnswer(answer)
//   const { body, pending } = await session.seal('open_wallet', params);
//   send(body)                                 → await session.open(pending, answer)   // the "Ok" value
//
// Secrets: the ECDH secret keys are zeroed once used; the AES key lives only inside WebCrypto as a
// non-extractable CryptoKey; every plaintext buffer this class makes is zeroed after sealing or
// opening. Params given as strings stay strings (JS strings cannot be wiped): give passwords and
// mnemonics as Uint8Array (UTF-8) and zero them yourself after the call to keep them out of the heap.

import { secp256k1 } from '@noble/curves/secp256k1.js';

import { arrayBacked, bytesEqual, fromBase64, fromHex, fromUtf8, toBase64, toHex, utf8 } from './bytes.js';
import { CLIENT_CODES, KeywardError, fromServerError, protocolError } from './errors.js';
import { ByteWriter, hasMember, isObject, jsonBytes, member, writeJson } from './json.js';

/** How many answer nonces a session remembers to refuse a replayed answer (as the Rust client). */
export const REMEMBERED_NONCES = 65_536;
/** AES-GCM nonce length. */
export const NONCE_LENGTH = 12;

/** Randomness: `length` fresh random bytes. */
export type RandomSource = (length: number) => Uint8Array;

/** The platform's CSPRNG (WebCrypto). */
export const systemRandom: RandomSource = (length) => globalThis.crypto.getRandomValues(new Uint8Array(length));

/** Options of a {@link Session}. */
export interface SessionOptions {
  /** Where key pairs and nonces come from (default: `crypto.getRandomValues`). */
  random?: RandomSource;
}

/** A sealed request waiting for its answer. */
export interface Pending {
  /** The id of the `encrypted_request_v3` envelope. */
  readonly outerId: number;
  /** The id of the inner call. */
  readonly innerId: number;
  /** The request's nonce (an answer must not reuse it). */
  readonly nonce: Uint8Array;
  /** The inner method, for messages. */
  readonly method: string;
  /** For a re-key: the new secret key, zeroed once the answer is handled. */
  rekeySecret: Uint8Array | null;
}

/** A sealed request. */
export interface Sealed {
  /** The `encrypted_request_v3` request's bytes, to send as they are. */
  body: Uint8Array;
  /** What {@link Session.open} needs to check the answer. */
  pending: Pending;
}

function notInitialized(): KeywardError {
  return new KeywardError('NotInitialized', 'no session key yet: run init_secure_api first', { code: CLIENT_CODES.local });
}

function parseAnswer(body: Uint8Array, what: string): unknown {
  const text = fromUtf8(body);
  if (text === null) throw protocolError(`${what} is not UTF-8`);
  try {
    return JSON.parse(text);
  } catch {
    throw protocolError(`${what} is not JSON`);
  }
}

/** The server's public key (SEC1 hex, 33 or 65 bytes, on the curve), as bytes. */
function parseServerKey(value: unknown): Uint8Array {
  if (typeof value !== 'string') throw protocolError('the server key is not a string');
  const bytes = fromHex(value);
  if (bytes === null || (bytes.length !== 33 && bytes.length !== 65)) {
    throw protocolError('the server key is not a 33- or 65-byte hex point');
  }
  try {
    secp256k1.Point.fromBytes(bytes).assertValidity();
  } catch {
    throw protocolError('the server key is not a point on secp256k1');
  }
  return bytes;
}

/**
 * The error an answer carries, as a KeywardError: a JSON-RPC `error` member with an integer code
 * and a string message. Anything else under `error` is itself a protocol error.
 */
function answerError(answer: unknown): KeywardError | null {
  if (!hasMember(answer, 'error')) return null;
  const error = member(answer, 'error');
  const code = member(error, 'code');
  const message = member(error, 'message');
  if (typeof code !== 'number' || !Number.isSafeInteger(code) || typeof message !== 'string') {
    return protocolError('an error answer without an integer code and a string message');
  }
  return fromServerError(code, message);
}

/** The `"Ok"` value of a JSON-RPC answer; throws the error it carries. */
export function okValue(answer: unknown): unknown {
  const error = answerError(answer);
  if (error) throw error;
  const result = member(answer, 'result');
  if (!hasMember(result, 'Ok')) throw protocolError('the answer has no result.Ok');
  return member(result, 'Ok');
}

/** One client's end of a V3 secure session. */
export class Session {
  private readonly random: RandomSource;
  private nextId = 1;
  private key: CryptoKey | null = null;
  private initSecret: Uint8Array | null = null;
  // Answer nonces seen under the current key, as hex, oldest first (a Set keeps insertion order).
  private seen = new Set<string>();

  constructor(options: SessionOptions = {}) {
    this.random = options.random ?? systemRandom;
  }

  /** Whether a shared key is in place. */
  get isReady(): boolean {
    return this.key !== null;
  }

  private draw(length: number): Uint8Array {
    const bytes = this.random(length);
    if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
      throw new KeywardError('Random', `the random source did not return ${length} bytes`, { code: CLIENT_CODES.local });
    }
    return bytes;
  }

  /** A valid secp256k1 secret key: 32 random bytes, drawn again while not a scalar in [1, n). */
  private newSecret(): Uint8Array {
    for (;;) {
      const bytes = this.draw(32);
      if (secp256k1.utils.isValidSecretKey(bytes)) return bytes;
      bytes.fill(0);
    }
  }

  private takeId(): number {
    return this.nextId++;
  }

  /** The plaintext `init_secure_api` request, with a fresh client key pair. */
  initRequest(): Uint8Array {
    this.initSecret?.fill(0);
    const secret = this.newSecret();
    const pub = toHex(secp256k1.getPublicKey(secret, true));
    this.initSecret = secret;
    // Keys sorted, as serde_json's `json!` writes them.
    return jsonBytes({ id: this.takeId(), jsonrpc: '2.0', method: 'init_secure_api', params: { ecdh_pubkey: pub } });
  }

  /** Takes the answer to {@link initRequest}: derives the shared key from the server's public key. */
  async handleInitAnswer(body: Uint8Array): Promise<void> {
    const secret = this.initSecret;
    if (secret === null) throw notInitialized();
    // The secret serves this one answer, good or bad: a new init makes a new key pair.
    this.initSecret = null;
    try {
      const serverKey = parseServerKey(okValue(parseAnswer(body, 'the answer to init_secure_api')));
      this.key = await deriveKey(secret, serverKey);
    } finally {
      secret.fill(0);
    }
    this.seen.clear();
  }

  /**
   * Seals the inner call `method(params)`. A Uint8Array in params is sent as the string of its UTF-8
   * bytes; the plaintext made here is zeroed once sealed (the caller's own arrays are left alone).
   */
  async seal(method: string, params: unknown): Promise<Sealed> {
    if (this.key === null) throw notInitialized();
    const innerId = this.takeId();
    const plaintext = new ByteWriter(1024);
    try {
      // The members in the Rust client's order (InnerCall: id, jsonrpc, method, params).
      plaintext.text(`{"id":${innerId},"jsonrpc":"2.0","method":${JSON.stringify(method)},"params":`);
      writeJson(plaintext, params);
      plaintext.byte(0x7d);
      return await this.sealRaw(plaintext.view(), innerId, method, null);
    } finally {
      plaintext.wipe();
    }
  }

  /**
   * Seals an encrypted `init_secure_api` (re-keying): the answer comes under the current key, the new
   * key applies from the next request, and the remembered answer nonces are forgotten.
   */
  async sealReinit(): Promise<Sealed> {
    if (this.key === null) throw notInitialized();
    const secret = this.newSecret();
    const pub = toHex(secp256k1.getPublicKey(secret, true));
    const innerId = this.takeId();
    const plaintext = jsonBytes({ id: innerId, jsonrpc: '2.0', method: 'init_secure_api', params: { ecdh_pubkey: pub } });
    try {
      return await this.sealRaw(plaintext, innerId, 'init_secure_api', secret);
    } catch (error) {
      secret.fill(0);
      throw error;
    } finally {
      plaintext.fill(0);
    }
  }

  /** Seals arbitrary plaintext as an `encrypted_request_v3` (for batches and tests). */
  async sealRaw(plaintext: Uint8Array, innerId: number, method = 'raw', rekeySecret: Uint8Array | null = null): Promise<Sealed> {
    const key = this.key;
    if (key === null) throw notInitialized();
    const nonce = this.draw(NONCE_LENGTH);
    const outerId = this.takeId();
    const sealed = await aesSeal(key, nonce, plaintext);
    // The members in the Rust client's order (OuterCall: id, jsonrpc, method, params{body_enc, nonce}).
    const body = utf8(
      `{"id":${outerId},"jsonrpc":"2.0","method":"encrypted_request_v3","params":{"body_enc":"${toBase64(sealed)}","nonce":"${toHex(nonce)}"}}`,
    );
    return { body, pending: { outerId, innerId, nonce, method, rekeySecret } };
  }

  /** Opens the answer to a sealed call and returns the whole inner JSON-RPC answer. */
  async openRaw(pending: Pending, body: Uint8Array): Promise<unknown> {
    try {
      return await this.openInner(pending, body);
    } finally {
      pending.rekeySecret?.fill(0);
      pending.rekeySecret = null;
    }
  }

  private async openInner(pending: Pending, body: Uint8Array): Promise<unknown> {
    const answer = parseAnswer(body, 'the answer');
    // Plaintext envelope errors may carry another id (grin writes "1"): only a result must be ours.
    if (!hasMember(answer, 'error') && member(answer, 'id') !== pending.outerId) {
      throw protocolError(`the answer's id is not the request's (${pending.outerId})`);
    }
    const envelope = okValue(answer);
    const nonceText = member(envelope, 'nonce');
    const bodyEnc = member(envelope, 'body_enc');
    if (typeof nonceText !== 'string' || typeof bodyEnc !== 'string') {
      throw protocolError('the envelope has no string nonce and body_enc');
    }
    const nonce = parseNonce(nonceText);
    const nonceHex = toHex(nonce);
    if (bytesEqual(nonce, pending.nonce)) throw protocolError('the answer reuses the request nonce (a reflected request)');
    if (this.seen.has(nonceHex)) throw protocolError('the answer nonce was seen before (a replayed answer)');
    const key = this.key;
    if (key === null) throw notInitialized();
    const ciphertext = fromBase64(bodyEnc);
    if (ciphertext === null) throw protocolError('body_enc is not base64');
    const plaintext = await decrypt(key, nonce, ciphertext);
    this.remember(nonceHex);
    let inner: unknown;
    try {
      inner = parseAnswer(plaintext, 'the inner answer');
    } finally {
      plaintext.fill(0);
    }
    // An error the server could not attribute (id null) is accepted, as the Rust client does.
    const unattributed = hasMember(inner, 'error') && member(inner, 'id') === null;
    if (isObject(inner) && !unattributed && member(inner, 'id') !== pending.innerId) {
      throw protocolError(`the inner answer's id is not the call's (${pending.innerId})`);
    }
    if (pending.rekeySecret !== null) await this.applyRekey(pending.rekeySecret, inner);
    return inner;
  }

  private async applyRekey(secret: Uint8Array, inner: unknown): Promise<void> {
    if (hasMember(inner, 'error')) return; // an error answer: the old key stays
    const serverKey = member(member(inner, 'result'), 'Ok');
    if (typeof serverKey !== 'string') throw protocolError('the answer to a re-key carries no server key');
    this.key = await deriveKey(secret, parseServerKey(serverKey));
    this.seen.clear();
  }

  /** Opens the answer to a sealed call: its `"Ok"` value, or a KeywardError for the error it carries. */
  async open(pending: Pending, body: Uint8Array): Promise<unknown> {
    return okValue(await this.openRaw(pending, body));
  }

  private remember(nonceHex: string): void {
    if (this.seen.size >= REMEMBERED_NONCES) {
      const oldest = this.seen.values().next();
      if (!oldest.done) this.seen.delete(oldest.value);
    }
    this.seen.add(nonceHex);
  }

  /** Forgets the key (the next call needs a new init). */
  reset(): void {
    this.key = null;
    this.initSecret?.fill(0);
    this.initSecret = null;
    this.seen.clear();
  }
}

/** An answer nonce: hex, at least 12 bytes and at most 1024 characters; the first 12 bytes count. */
function parseNonce(text: string): Uint8Array {
  const bytes = text.length >= 2 * NONCE_LENGTH && text.length <= 1024 ? fromHex(text) : null;
  if (bytes === null) throw protocolError('the answer nonce is not 12 bytes of hex');
  return bytes.slice(0, NONCE_LENGTH);
}

async function decrypt(key: CryptoKey, nonce: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> {
  if (ciphertext.length < 16) throw protocolError('body_enc is shorter than a tag');
  const plaintext = await aesOpen(key, nonce, ciphertext);
  if (plaintext === null) throw protocolError('the answer did not authenticate under the session key');
  return plaintext;
}

/** AES-256-GCM with empty AAD: ciphertext ‖ tag. A copy of the plaintext made on the way is wiped. */
export async function aesSeal(key: CryptoKey, nonce: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const input = arrayBacked(plaintext);
  try {
    return new Uint8Array(await globalThis.crypto.subtle.encrypt({ name: 'AES-GCM', iv: arrayBacked(nonce).view }, key, input.view));
  } finally {
    if (input.copied) input.view.fill(0);
  }
}

/** Opens AES-256-GCM ciphertext ‖ tag (empty AAD): the plaintext, or null if it does not authenticate. */
export async function aesOpen(key: CryptoKey, nonce: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array | null> {
  try {
    const iv = arrayBacked(nonce).view;
    return new Uint8Array(await globalThis.crypto.subtle.decrypt({ name: 'AES-GCM', iv }, key, arrayBacked(ciphertext).view));
  } catch {
    return null;
  }
}

/** A raw 32-byte key as a non-extractable AES-256-GCM CryptoKey. */
export async function importAesKey(raw: Uint8Array): Promise<CryptoKey> {
  return globalThis.crypto.subtle.importKey('raw', arrayBacked(raw).view, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
}

/** The V3 shared secret: the 32-byte X coordinate of secret × peer point (no hash, no KDF). */
export function sharedX(secret: Uint8Array, peer: Uint8Array): Uint8Array {
  const point = secp256k1.getSharedSecret(secret, peer, true);
  const x = point.slice(1);
  point.fill(0);
  return x;
}

/** The V3 key: the X coordinate of secret × server point, as a non-extractable AES-256-GCM key. */
export async function deriveKey(secret: Uint8Array, serverKey: Uint8Array): Promise<CryptoKey> {
  const x = sharedX(secret, serverKey);
  try {
    return await importAesKey(x);
  } finally {
    x.fill(0);
  }
}
