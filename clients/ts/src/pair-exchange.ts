// The pairing exchange of spec/pairing.md without any I/O, on SPAKE2 (src/spake2.ts): codes, the key
// schedule, the confirmations, the sealed messages and the four messages' strict JSON. No Node built-in
// is used here (WebCrypto and @noble only), so this module also runs in a browser; src/pairing.ts
// carries it over TCP and writes the bundle.

import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';

import { bytesEqual, fromBase64, toBase64 } from './bytes.js';
import { CLIENT_CODES, KeywardError } from './errors.js';
import { Spake2, defaultRandom, type RandomSource } from './spake2.js';

const encoder = new TextEncoder();

/** The protocol version in Hello. */
export const PAIR_VERSION = 1;
/** The largest pairing message. */
export const MAX_MESSAGE = 16 * 1024;
/** SPAKE2 identities of the two sides. */
export const ID_CLIENT = 'keyward pairing client';
export const ID_SERVER = 'keyward pairing server';
/** The key schedule's label and the AES-GCM associated data. */
export const PAIR_LABEL = 'keyward/pair/v1';

/** Crockford's base32 (no I, L, O, U). */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const CODE_LEN = 10;
const ID_LEN = 2;

const WRONG_CODE =
  'the code is wrong, used, expired or voided after 3 wrong tries: ask the owner for a new one (`keyward clients pair`)';
const BAD_CODE = 'a pairing code is 10 characters of 0-9 and A-Z (without U), as `keyward clients pair` printed it';

/** A code as typed, normalized: its 10 characters (ASCII bytes, the SPAKE2 password) and its id. */
export interface PairingCode {
  /** The 10 characters, as bytes: the password. Wipe it (`fill(0)`) when done. */
  password: Uint8Array;
  /** The first two characters: they travel in clear. */
  id: string;
}

/**
 * Reads a code as a person typed it (crate keyward-pairing's `PairingCode::parse`): case, spaces and
 * dashes do not matter, I and L read as 1, O as 0. Null when it is not a code.
 */
export function parseCode(typed: string | Uint8Array): PairingCode | null {
  const text = typeof typed === 'string' ? typed : new TextDecoder('utf-8', { fatal: false }).decode(typed);
  const password = new Uint8Array(CODE_LEN);
  let len = 0;
  for (const raw of text) {
    let c = raw.length === 1 && raw.charCodeAt(0) < 0x80 ? raw.toUpperCase() : raw;
    if (c === '-' || c === ' ') continue;
    if (c === 'I' || c === 'L') c = '1';
    else if (c === 'O') c = '0';
    if (c.length !== 1 || !ALPHABET.includes(c) || len === CODE_LEN) {
      password.fill(0);
      return null;
    }
    password[len++] = c.charCodeAt(0);
  }
  if (len !== CODE_LEN) {
    password.fill(0);
    return null;
  }
  return { password, id: String.fromCharCode(password[0] as number, password[1] as number) };
}

/** Whether `id` could name a code (two characters of the alphabet). */
export function validId(id: string): boolean {
  return id.length === ID_LEN && [...id].every((c) => ALPHABET.includes(c));
}

/** The four keys of an exchange. */
export interface PairKeys {
  serverConfirm: Uint8Array;
  clientConfirm: Uint8Array;
  clientToServer: Uint8Array;
  serverToClient: Uint8Array;
}

/** HMAC-SHA256(key, len‖part‖len‖part…), each length a 64-bit big-endian integer. */
export function framedHmac(key: Uint8Array, parts: Uint8Array[]): Uint8Array {
  const mac = hmac.create(sha256, key);
  for (const part of parts) {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(part.length), false);
    mac.update(len).update(part);
  }
  return mac.digest();
}

/** The four keys from the SPAKE2 key K. */
export function deriveKeys(k: Uint8Array): PairKeys {
  const label = encoder.encode(PAIR_LABEL);
  const key = (name: string) => framedHmac(k, [label, encoder.encode(name)]);
  return {
    serverConfirm: key('server confirm'),
    clientConfirm: key('client confirm'),
    clientToServer: key('client to server'),
    serverToClient: key('server to client'),
  };
}

/** Zeroes the four keys. */
export function wipeKeys(keys: PairKeys): void {
  keys.serverConfirm.fill(0);
  keys.clientConfirm.fill(0);
  keys.clientToServer.fill(0);
  keys.serverToClient.fill(0);
}

/** A side's confirmation: HMAC over its side ("server"/"client"), the code's id and both SPAKE2 messages. */
export function confirmation(
  key: Uint8Array,
  side: 'server' | 'client',
  id: string,
  msgA: Uint8Array,
  msgB: Uint8Array,
): Uint8Array {
  return framedHmac(key, [encoder.encode(side), encoder.encode(id), msgA, msgB]);
}

/** A copy whose buffer is a plain ArrayBuffer (what WebCrypto takes). */
function own(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const copy = new Uint8Array(new ArrayBuffer(bytes.length));
  copy.set(bytes);
  return copy;
}

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new KeywardError('Protocol', 'WebCrypto (globalThis.crypto.subtle) is not available', { code: CLIENT_CODES.local });
  return s;
}

async function aesKey(key: Uint8Array, usage: 'encrypt' | 'decrypt'): Promise<CryptoKey> {
  const raw = own(key);
  try {
    return await subtle().importKey('raw', raw, { name: 'AES-GCM' }, false, [usage]);
  } finally {
    raw.fill(0);
  }
}

function gcm(): AesGcmParams {
  return { name: 'AES-GCM', iv: new Uint8Array(12), additionalData: own(encoder.encode(PAIR_LABEL)), tagLength: 128 };
}

/** AES-256-GCM with a zero nonce and AAD `keyward/pair/v1` (each key seals one message): ciphertext ‖ tag. */
export async function seal(key: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const cipher = await aesKey(key, 'encrypt');
  return new Uint8Array(await subtle().encrypt(gcm(), cipher, own(plaintext)));
}

/** Opens what `seal` sealed; null when it does not open (wrong key, tampered). */
export async function open(key: Uint8Array, sealed: Uint8Array): Promise<Uint8Array | null> {
  const cipher = await aesKey(key, 'decrypt');
  try {
    return new Uint8Array(await subtle().decrypt(gcm(), cipher, own(sealed)));
  } catch {
    return null;
  }
}

// --- messages ---------------------------------------------------------------------------------------

/** Why a message is not one of the protocol's (never carries a secret). */
export class MalformedMessage extends Error {
  constructor(why: string) {
    super(why);
    this.name = 'MalformedMessage';
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Parses a message: at most MAX_MESSAGE bytes of UTF-8 JSON. */
export function parseJson(bytes: Uint8Array): Json {
  if (bytes.length > MAX_MESSAGE) throw new MalformedMessage(`${bytes.length} bytes is more than ${MAX_MESSAGE}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new MalformedMessage('not UTF-8');
  }
  try {
    return JSON.parse(text) as Json;
  } catch {
    throw new MalformedMessage('not JSON');
  }
}

/** The object's fields, refusing unknown ones and missing required ones. */
function fields(value: Json, required: string[], optional: string[] = []): Record<string, Json> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new MalformedMessage('not a JSON object');
  for (const key of Object.keys(value)) {
    if (!required.includes(key) && !optional.includes(key)) throw new MalformedMessage(`unknown field \`${key}\``);
  }
  for (const key of required) {
    if (!(key in value)) throw new MalformedMessage(`missing field \`${key}\``);
  }
  return value;
}

function str(value: Json | undefined, field: string): string {
  if (typeof value !== 'string') throw new MalformedMessage(`\`${field}\` is not a string`);
  return value;
}

function optStr(value: Json | undefined, field: string): string | null {
  return value === undefined || value === null ? null : str(value, field);
}

/** Bytes in standard base64, strict as the Rust side's engine (canonical padding, no stray bits). */
function b64(value: Json | undefined, field: string): Uint8Array {
  const bytes = fromBase64(str(value, field));
  if (!bytes) throw new MalformedMessage(`\`${field}\` is not standard base64`);
  return bytes;
}

function jsonBytes(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** The client's first message. */
export interface Hello {
  keyward_pair: number;
  id: string;
  spake: Uint8Array;
}

export function encodeHello(hello: Hello): Uint8Array {
  return jsonBytes({ keyward_pair: hello.keyward_pair, id: hello.id, spake: toBase64(hello.spake) });
}

export function parseHello(bytes: Uint8Array): Hello {
  const f = fields(parseJson(bytes), ['keyward_pair', 'id', 'spake']);
  const version = f.keyward_pair;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 0 || version > 0xffffffff) {
    throw new MalformedMessage('`keyward_pair` is not a u32');
  }
  return { keyward_pair: version, id: str(f.id, 'id'), spake: b64(f.spake, 'spake') };
}

/** The server's answer to Hello. */
export interface Reply {
  spake: Uint8Array;
  confirm: Uint8Array;
}

export function encodeReply(reply: Reply): Uint8Array {
  return jsonBytes({ spake: toBase64(reply.spake), confirm: toBase64(reply.confirm) });
}

export function parseReply(bytes: Uint8Array): Reply {
  const f = fields(parseJson(bytes), ['spake', 'confirm']);
  return { spake: b64(f.spake, 'spake'), confirm: b64(f.confirm, 'confirm') };
}

/** The client's second message. */
export interface Finish {
  confirm: Uint8Array;
  sealed: Uint8Array;
}

export function encodeFinish(finish: Finish): Uint8Array {
  return jsonBytes({ confirm: toBase64(finish.confirm), sealed: toBase64(finish.sealed) });
}

export function parseFinish(bytes: Uint8Array): Finish {
  const f = fields(parseJson(bytes), ['confirm', 'sealed']);
  return { confirm: b64(f.confirm, 'confirm'), sealed: b64(f.sealed, 'sealed') };
}

/** The server's last message. */
export interface Done {
  sealed: Uint8Array;
}

export function encodeDone(done: Done): Uint8Array {
  return jsonBytes({ sealed: toBase64(done.sealed) });
}

export function parseDone(bytes: Uint8Array): Done {
  const f = fields(parseJson(bytes), ['sealed']);
  return { sealed: b64(f.sealed, 'sealed') };
}

/** A refusal in clear: `{"error": "…"}`. */
export function parseRefusal(bytes: Uint8Array): string | null {
  try {
    const f = fields(parseJson(bytes), ['error']);
    return str(f.error, 'error');
  } catch {
    return null;
  }
}

export function encodeRefusal(error: string): Uint8Array {
  return jsonBytes({ error });
}

/** What the client asks for, sealed in Finish. */
export interface PairRequest {
  /** The name the client expects (the owner chose it), or null. */
  name: string | null;
  /** The client's public key, PEM SubjectPublicKeyInfo. */
  public_key: string;
}

export function encodeRequest(request: PairRequest): Uint8Array {
  return jsonBytes({ name: request.name, public_key: request.public_key });
}

export function parseRequest(bytes: Uint8Array): PairRequest {
  const f = fields(parseJson(bytes), ['public_key'], ['name']);
  return { name: optStr(f.name, 'name'), public_key: str(f.public_key, 'public_key') };
}

/** The server's addresses. */
export interface Endpoints {
  url: string | null;
  quic: string | null;
}

/** What a paired client gets. */
export interface Granted {
  name: string;
  role: string;
  certificate: string;
  ca_certificate: string;
  endpoints: Endpoints;
}

/** What the server seals in Done: the grant, or why the client was not registered. */
export type Outcome = { ok: Granted } | { error: string };

export function encodeOutcome(outcome: Outcome): Uint8Array {
  if ('error' in outcome) return jsonBytes({ error: outcome.error });
  const g = outcome.ok;
  const endpoints: Record<string, string> = {};
  if (g.endpoints.url !== null) endpoints.url = g.endpoints.url;
  if (g.endpoints.quic !== null) endpoints.quic = g.endpoints.quic;
  return jsonBytes({
    ok: { name: g.name, role: g.role, certificate: g.certificate, ca_certificate: g.ca_certificate, endpoints },
  });
}

export function parseOutcome(bytes: Uint8Array): Outcome {
  const value = parseJson(bytes);
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && 'error' in value) {
    return { error: str(fields(value, ['error']).error, 'error') };
  }
  const ok = fields(value, ['ok']).ok as Json;
  const g = fields(ok, ['name', 'role', 'certificate', 'ca_certificate', 'endpoints']);
  const e = fields(g.endpoints as Json, [], ['url', 'quic']);
  return {
    ok: {
      name: str(g.name, 'name'),
      role: str(g.role, 'role'),
      certificate: str(g.certificate, 'certificate'),
      ca_certificate: str(g.ca_certificate, 'ca_certificate'),
      endpoints: { url: optStr(e.url, 'url'), quic: optStr(e.quic, 'quic') },
    },
  };
}

// --- the client's side ------------------------------------------------------------------------------

function protocolError(why: string, cause?: unknown): KeywardError {
  return new KeywardError('Protocol', `the pairing server broke the pairing protocol: ${why}`, {
    code: CLIENT_CODES.protocol,
    cause,
  });
}

/** The KeywardError of a wrong code (the server did not prove it knows it, or has no such live code). */
export function wrongCodeError(detail?: string): KeywardError {
  return new KeywardError('WrongCode', detail ? `${WRONG_CODE} (${detail})` : WRONG_CODE, {
    code: CLIENT_CODES.protocol,
  });
}

/** The KeywardError of a string that is not a code. */
export function badCodeError(): KeywardError {
  return new KeywardError('WrongCode', BAD_CODE, { code: CLIENT_CODES.local });
}

function refusedError(why: string): KeywardError {
  return new KeywardError('Refused', `the pairing server refused: ${why}`, { code: CLIENT_CODES.protocol });
}

/**
 * The client's side of the exchange, sans-IO: `hello` to send, then `confirm(reply)` (throws
 * WrongCode when the server does not prove it knows the code: send nothing more), then
 * `finish(request)` to send, then `outcome(done)`. Each step once, in order.
 */
export class ClientExchange {
  /** The code's id. */
  readonly id: string;
  /** The Hello message's bytes. */
  readonly hello: Uint8Array;
  readonly #msgA: Uint8Array;
  #spake: Spake2 | null;
  #keys: PairKeys | null = null;
  #myConfirm: Uint8Array | null = null;
  #state: 'started' | 'confirmed' | 'finished' | 'done' | 'failed' = 'started';

  private constructor(code: PairingCode, random: RandomSource) {
    this.id = code.id;
    this.#spake = Spake2.startA(code.password, encoder.encode(ID_CLIENT), encoder.encode(ID_SERVER), random);
    this.#msgA = this.#spake.message;
    this.hello = encodeHello({ keyward_pair: PAIR_VERSION, id: code.id, spake: this.#msgA });
  }

  /**
   * Starts with a code as typed (a string, or its bytes, which are then zeroed) or parsed. Throws a
   * WrongCode KeywardError when it is not a code. The password bytes are zeroed once SPAKE2 started.
   */
  static start(code: string | Uint8Array | PairingCode, random: RandomSource = defaultRandom): ClientExchange {
    const parsed = typeof code === 'string' || code instanceof Uint8Array ? parseCode(code) : code;
    if (code instanceof Uint8Array) code.fill(0);
    if (!parsed) throw badCodeError();
    try {
      return new ClientExchange(parsed, random);
    } finally {
      parsed.password.fill(0);
    }
  }

  /**
   * Reads the server's answer to Hello and checks its confirmation. Throws WrongCode (the server does
   * not know the code, or has no live code with this id), Refused (another refusal) or Protocol.
   */
  confirm(answer: Uint8Array): void {
    if (this.#state !== 'started' || !this.#spake) throw new Error('confirm() follows start(), once');
    this.#state = 'failed';
    let reply: Reply;
    try {
      reply = parseReply(answer);
    } catch (error) {
      this.wipe();
      const refusal = parseRefusal(answer);
      if (refusal === null) throw protocolError(error instanceof Error ? error.message : 'not a Reply', error);
      // A refusal of Hello: no live code with this id (wrong, used, expired, voided), or a protocol mismatch.
      if (refusal.startsWith('not a pairing message')) throw refusedError(refusal);
      throw wrongCodeError(`the server: ${refusal}`);
    }
    let key: Uint8Array;
    try {
      key = this.#spake.finish(reply.spake);
    } catch {
      this.wipe();
      throw wrongCodeError('the server did not prove it knows this code; nothing but the SPAKE2 message was sent');
    } finally {
      this.#spake = null;
    }
    const keys = deriveKeys(key);
    key.fill(0);
    const expected = confirmation(keys.serverConfirm, 'server', this.id, this.#msgA, reply.spake);
    const ok = bytesEqual(expected, reply.confirm);
    expected.fill(0);
    if (!ok) {
      wipeKeys(keys);
      throw wrongCodeError('the server did not prove it knows this code; nothing but the SPAKE2 message was sent');
    }
    this.#myConfirm = confirmation(keys.clientConfirm, 'client', this.id, this.#msgA, reply.spake);
    keys.serverConfirm.fill(0);
    keys.clientConfirm.fill(0);
    this.#keys = keys;
    this.#state = 'confirmed';
  }

  /** The Finish message sealing `request` (once: the key seals one message). */
  async finish(request: PairRequest): Promise<Uint8Array> {
    if (this.#state !== 'confirmed' || !this.#keys || !this.#myConfirm) throw new Error('finish() follows confirm(), once');
    this.#state = 'finished';
    const sealed = await seal(this.#keys.clientToServer, encodeRequest(request));
    this.#keys.clientToServer.fill(0);
    const message = encodeFinish({ confirm: this.#myConfirm, sealed });
    this.#myConfirm.fill(0);
    return message;
  }

  /**
   * Opens the server's Done: the grant. Throws Refused (a refusal in clear, or the server could not
   * register the client: its reason) or Protocol (it does not open or is not an Outcome).
   */
  async outcome(answer: Uint8Array): Promise<Granted> {
    if (this.#state !== 'finished' || !this.#keys) throw new Error('outcome() follows finish(), once');
    this.#state = 'done';
    const keys = this.#keys;
    this.#keys = null;
    try {
      let done: Done;
      try {
        done = parseDone(answer);
      } catch (error) {
        const refusal = parseRefusal(answer);
        if (refusal !== null) throw refusedError(refusal);
        throw protocolError(error instanceof Error ? error.message : 'not a Done', error);
      }
      const plaintext = await open(keys.serverToClient, done.sealed);
      if (!plaintext) throw protocolError('its last message does not open');
      let outcome: Outcome;
      try {
        outcome = parseOutcome(plaintext);
      } catch (error) {
        throw protocolError(error instanceof Error ? error.message : 'not an Outcome', error);
      }
      if ('error' in outcome) {
        throw new KeywardError('Refused', `the server could not register this client: ${outcome.error}`, {
          code: CLIENT_CODES.protocol,
        });
      }
      return outcome.ok;
    } finally {
      wipeKeys(keys);
    }
  }

  /** Forgets every secret (any step may be abandoned: call it then). */
  wipe(): void {
    this.#spake?.wipe();
    this.#spake = null;
    if (this.#keys) wipeKeys(this.#keys);
    this.#keys = null;
    this.#myConfirm?.fill(0);
    if (this.#state !== 'done') this.#state = 'failed';
  }
}
