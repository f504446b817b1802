// Pairing a front end with a one-time code (spec/pairing.md), Node side: the exchange over TCP to the
// server's pairing listener, a new ECDSA P-256 key pair (WebCrypto), the certificate's check, and the
// bundle directory `keyward pair` writes (pairing/src/bundle.rs): ca.crt, client.crt, client.key
// (0600) and keyward.toml in a 0700 directory. The cryptography and the messages are in pair-exchange.ts (on spake2.ts).
//
//   const dir = await pair({ code: '7KQ2M-XR4TD', pairUrl: 'tcp://127.0.0.1:3422', name: 'laptop', out: './laptop' });
//   const creds = await pairInMemory({ code, pairUrl });   // for a keychain: nothing written

import { X509Certificate } from 'node:crypto';
import { isIPv4, isIPv6, Socket } from 'node:net';

import { checkBundleTarget, writeBundle } from './bundle-write.js';
import { CLIENT_CODES, KeywardError } from './errors.js';
import {
  ClientExchange,
  MAX_MESSAGE,
  badCodeError,
  parseCode,
  type Granted,
  type PairingCode,
} from './pair-exchange.js';
import { defaultRandom, type RandomSource } from './spake2.js';

export { BUNDLE_FILES, bundleToml, checkBundleTarget } from './bundle-write.js';

/** How long a whole pairing may take unless `timeoutMs` says otherwise. */
export const DEFAULT_PAIR_TIMEOUT_MS = 15_000;

/** What `pairInMemory` and `pair` take. */
export interface PairInMemoryOptions {
  /** The code as `keyward clients pair` printed it (case, spaces and dashes do not matter). Bytes are zeroed. */
  code: string | Uint8Array;
  /** Where to pair, as `keyward clients pair` printed it: `tcp://IP:PORT`. */
  pairUrl: string;
  /** The client name the owner chose: checked by the server (and again here). Optional. */
  name?: string | null;
  /** How long the whole exchange may take (default 15 s). */
  timeoutMs?: number;
  /** Randomness for SPAKE2 (`random(n)` gives n bytes); default WebCrypto's. */
  random?: RandomSource;
}

/** What `pair` takes: where to write the bundle, too. */
export interface PairOptions extends PairInMemoryOptions {
  /** The bundle directory: missing (it is made 0700) or a directory that holds none of the four files. */
  out: string;
}

/** A paired client's credentials, for an app that keeps them in a keychain rather than on disk. */
export interface PairedClient {
  /** The client's registered name. */
  name: string;
  /** Its role when it was paired: reader, signer or owner. */
  role: string;
  /** The CA's certificate (PEM): the only root to trust for this server. */
  caPem: string;
  /** The client's certificate (PEM). */
  certPem: string;
  /** The client's private key (PKCS#8 PEM, `PRIVATE KEY`). */
  keyPem: string;
  /** Where the server listens: HTTPS URL and QUIC address (null when the server has none). */
  endpoints: { url: string | null; quic: string | null };
}

function transportError(variant: 'Unreachable' | 'Timeout', message: string, cause?: unknown): KeywardError {
  return new KeywardError(variant, message, { code: CLIENT_CODES.transport, cause });
}

function protocolError(why: string, cause?: unknown): KeywardError {
  return new KeywardError('Protocol', `the pairing server broke the pairing protocol: ${why}`, {
    code: CLIENT_CODES.protocol,
    cause,
  });
}

const BAD_URL = 'the pairing address must be tcp://IP:PORT, as `keyward clients pair` printed it';

/** Reads a pairing address: `tcp://IP:PORT` or `IP:PORT` (`[IPv6]:PORT`), as the Rust side does. */
export function parsePairUrl(url: string): { host: string; port: number } {
  const fail = () => new KeywardError('Unreachable', BAD_URL, { code: CLIENT_CODES.local });
  if (typeof url !== 'string') throw fail();
  let rest = url.startsWith('tcp://') ? url.slice('tcp://'.length) : url;
  while (rest.endsWith('/')) rest = rest.slice(0, -1);
  const match = /^(?:\[([^\]]+)\]|([0-9.]+)):([0-9]{1,5})$/.exec(rest);
  if (!match) throw fail();
  const host = match[1] ?? match[2] ?? '';
  const port = Number(match[3]);
  const hostOk = match[1] !== undefined ? isIPv6(host) : isIPv4(host);
  if (!hostOk || !(port >= 1 && port <= 65535)) throw fail();
  return { host, port };
}

function ioCode(error: unknown): string {
  return typeof error === 'object' && error !== null && 'code' in error ? String((error as { code: unknown }).code) : '';
}

/** Milliseconds left until `deadline`, within what setTimeout takes. */
function remaining(deadline: number): number {
  return Math.min(2 ** 31 - 1, Math.max(0, deadline - Date.now()));
}

/** One TCP connection carrying frames: a 4-byte big-endian length, then that many bytes (≤ 16 KiB). */
class FrameLink {
  readonly #socket: Socket;
  readonly #url: string;
  readonly #timeoutMs: number;
  #pending: Buffer = Buffer.alloc(0);
  #ended = false;
  #failure: KeywardError | null = null;
  #wake: (() => void) | null = null;

  private constructor(socket: Socket, url: string, timeoutMs: number) {
    this.#socket = socket;
    this.#url = url;
    this.#timeoutMs = timeoutMs;
    socket.on('data', (chunk: Buffer) => {
      this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
      if (this.#pending.length > 2 * (4 + MAX_MESSAGE)) {
        this.#fail(protocolError(`it sent more than ${2 * (4 + MAX_MESSAGE)} bytes unasked`));
      }
      this.#wake?.();
    });
    socket.on('end', () => {
      this.#ended = true;
      this.#wake?.();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#wake?.();
    });
    // Kept for the socket's whole life: an error after the exchange must not become an uncaught event.
    socket.on('error', (error) => {
      this.#fail(
        transportError('Unreachable', `the pairing connection to ${url} failed (${ioCode(error) || 'I/O error'})`, error),
      );
    });
  }

  #fail(error: KeywardError): void {
    this.#failure ??= error;
    this.#socket.destroy();
    this.#wake?.();
  }

  #timeout(): KeywardError {
    return transportError(
      'Timeout',
      `the pairing server at ${this.#url} did not answer within ${this.#timeoutMs} ms (the exchange was abandoned)`,
    );
  }

  /** Connects by `deadline`: Unreachable when nothing listens, Timeout when the connection does not complete. */
  static connect(host: string, port: number, url: string, deadline: number, timeoutMs: number): Promise<FrameLink> {
    return new Promise((resolve, reject) => {
      const socket = new Socket();
      const timer = setTimeout(() => {
        socket.destroy();
        reject(transportError('Timeout', `no connection to the pairing listener at ${url} within ${timeoutMs} ms`));
      }, remaining(deadline));
      // Kept until connected: a socket must never emit 'error' with no listener.
      const onError = (error: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(
          transportError(
            'Unreachable',
            `nothing listens for pairing at ${url} (${ioCode(error) || error.message}): the pairing listener is open ` +
              'only while a code is live; ask the owner for a new code (`keyward clients pair`)',
            error,
          ),
        );
      };
      socket.on('error', onError);
      socket.connect({ host, port }, () => {
        clearTimeout(timer);
        socket.off('error', onError);
        socket.setNoDelay(true);
        resolve(new FrameLink(socket, url, timeoutMs));
      });
    });
  }

  /** Writes one frame. */
  send(body: Uint8Array, deadline: number): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    const frame = Buffer.alloc(4 + body.length);
    frame.writeUInt32BE(body.length, 0);
    frame.set(body, 4);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#fail(this.#timeout());
        reject(this.#timeout());
      }, remaining(deadline));
      this.#socket.write(frame, (error) => {
        clearTimeout(timer);
        if (error) {
          this.#fail(transportError('Unreachable', `the pairing connection to ${this.#url} failed while sending`, error));
          reject(this.#failure ?? error);
        } else {
          resolve();
        }
      });
    });
  }

  /** The next frame if it is whole in the buffer; throws Protocol when its length is over the limit. */
  #take(): Uint8Array | null {
    if (this.#pending.length < 4) return null;
    const len = this.#pending.readUInt32BE(0);
    if (len > MAX_MESSAGE) {
      throw protocolError(`a message of ${len} bytes is larger than the limit of ${MAX_MESSAGE} bytes`);
    }
    if (this.#pending.length < 4 + len) return null;
    const body = new Uint8Array(this.#pending.subarray(4, 4 + len));
    this.#pending = this.#pending.subarray(4 + len);
    return body;
  }

  /** Reads one frame by `deadline`. */
  async receive(deadline: number): Promise<Uint8Array> {
    for (;;) {
      const body = this.#take();
      if (body) return body;
      if (this.#failure) throw this.#failure;
      if (this.#ended) {
        if (this.#pending.length > 0) throw protocolError('the connection ended inside a message');
        throw transportError(
          'Unreachable',
          `the pairing server at ${this.#url} closed the connection without an answer (too many pairing ` +
            'connections at once, or the server is stopping): try again',
        );
      }
      const left = remaining(deadline);
      if (left === 0) {
        this.#fail(this.#timeout());
        throw this.#timeout();
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  close(): void {
    this.#socket.destroy();
  }
}

// --- key pair and PEM ---------------------------------------------------------------------------------

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** PEM of `der` as ASCII bytes (64-character lines, LF), built without a string so it can be zeroed. */
function pemBytes(label: string, der: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(`-----BEGIN ${label}-----\n`);
  const tail = new TextEncoder().encode(`-----END ${label}-----\n`);
  const b64Len = Math.ceil(der.length / 3) * 4;
  const lines = Math.ceil(b64Len / 64);
  const out = new Uint8Array(head.length + b64Len + lines + tail.length);
  out.set(head, 0);
  let o = head.length;
  let column = 0;
  const put = (c: number) => {
    out[o++] = c;
    if (++column === 64) {
      out[o++] = 0x0a;
      column = 0;
    }
  };
  for (let i = 0; i < der.length; i += 3) {
    const b0 = der[i] as number;
    const b1 = der[i + 1];
    const b2 = der[i + 2];
    put(B64.charCodeAt(b0 >> 2));
    put(B64.charCodeAt(((b0 & 3) << 4) | ((b1 ?? 0) >> 4)));
    put(b1 === undefined ? 0x3d : B64.charCodeAt(((b1 & 15) << 2) | ((b2 ?? 0) >> 6)));
    put(b2 === undefined ? 0x3d : B64.charCodeAt(b2 & 63));
  }
  if (column !== 0) out[o++] = 0x0a;
  out.set(tail, o);
  return out;
}

interface KeyPair {
  /** DER SubjectPublicKeyInfo. */
  spki: Uint8Array;
  /** PEM `PUBLIC KEY`. */
  publicPem: string;
  /** PEM `PRIVATE KEY` (PKCS#8) as bytes: zero it when done. */
  privatePem: Uint8Array;
}

/** A new ECDSA P-256 key pair (WebCrypto), as rcgen's `KeyPair::generate` makes for the Rust client. */
async function makeKeyPair(): Promise<KeyPair> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new KeywardError('Bundle', 'WebCrypto (globalThis.crypto.subtle) is not available', { code: CLIENT_CODES.local });
  let spki: Uint8Array;
  let pkcs8: Uint8Array;
  try {
    const keys = (await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    spki = new Uint8Array(await subtle.exportKey('spki', keys.publicKey));
    pkcs8 = new Uint8Array(await subtle.exportKey('pkcs8', keys.privateKey));
  } catch (error) {
    throw new KeywardError('Bundle', 'cannot make an ECDSA P-256 key pair with WebCrypto', { code: CLIENT_CODES.local, cause: error });
  }
  try {
    return {
      spki,
      publicPem: new TextDecoder().decode(pemBytes('PUBLIC KEY', spki)),
      privatePem: pemBytes('PRIVATE KEY', pkcs8),
    };
  } finally {
    pkcs8.fill(0);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** Checks the grant: its certificate is X.509 over our key, signed by the CA it names; the name is ours. */
function checkGrant(granted: Granted, key: KeyPair, name: string | null): void {
  if (name !== null && granted.name !== name) {
    throw protocolError(`it registered the name '${granted.name}', not '${name}'`);
  }
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(granted.certificate);
  } catch (error) {
    throw protocolError('its certificate is not X.509 PEM', error);
  }
  try {
    ca = new X509Certificate(granted.ca_certificate);
  } catch (error) {
    throw protocolError('its CA certificate is not X.509 PEM', error);
  }
  const got = new Uint8Array(cert.publicKey.export({ type: 'spki', format: 'der' }));
  if (!sameBytes(got, key.spki)) throw protocolError('the certificate is for another key');
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw protocolError('the certificate is not signed by the CA it sent');
  }
}

// --- the exchange -------------------------------------------------------------------------------------

interface Exchanged {
  granted: Granted;
  key: KeyPair;
}

function timeoutOf(options: PairInMemoryOptions): number {
  const t = options.timeoutMs ?? DEFAULT_PAIR_TIMEOUT_MS;
  if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) {
    throw new KeywardError('Timeout', 'timeoutMs must be a positive number of milliseconds', { code: CLIENT_CODES.local });
  }
  return t;
}

function nameOf(options: PairInMemoryOptions): string | null {
  const name = options.name ?? null;
  if (name !== null && typeof name !== 'string') {
    throw new KeywardError('Refused', 'name must be a string (the client name the owner chose)', { code: CLIENT_CODES.local });
  }
  return name;
}

function checkOptions<T extends PairInMemoryOptions>(options: T): T {
  if (typeof options !== 'object' || options === null) {
    throw new KeywardError('WrongCode', 'pairing takes an options object: { code, pairUrl, name?, out?, timeoutMs? }', {
      code: CLIENT_CODES.local,
    });
  }
  return options;
}

/** Runs `f`, turning anything thrown that is not a KeywardError into one (no untyped throw). */
async function typed<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (error) {
    if (error instanceof KeywardError) throw error;
    throw new KeywardError('Protocol', `pairing failed: ${error instanceof Error ? error.message : String(error)}`, {
      code: CLIENT_CODES.local,
      cause: error,
    });
  }
}

/** Reads the code (zeroing bytes given), or throws WrongCode for a string that is not a code. */
function takeCode(code: string | Uint8Array): PairingCode {
  const parsed = typeof code === 'string' || code instanceof Uint8Array ? parseCode(code) : null;
  if (code instanceof Uint8Array) code.fill(0);
  if (!parsed) throw badCodeError();
  return parsed;
}

/** Hello → Reply (the server confirms first) → Finish → Done; the key pair is made before connecting. */
async function exchange(
  code: PairingCode,
  url: string,
  name: string | null,
  timeoutMs: number,
  random: RandomSource,
): Promise<Exchanged> {
  const { host, port } = parsePairUrl(url);
  const deadline = Date.now() + timeoutMs;
  const key = await makeKeyPair();
  let client: ClientExchange | null = null;
  let link: FrameLink | null = null;
  try {
    client = ClientExchange.start(code, random);
    link = await FrameLink.connect(host, port, url, deadline, timeoutMs);
    await link.send(client.hello, deadline);
    // A failed check throws here: nothing but the SPAKE2 message was sent, nothing is written.
    client.confirm(await link.receive(deadline));
    await link.send(await client.finish({ name, public_key: key.publicPem }), deadline);
    const granted = await client.outcome(await link.receive(deadline));
    checkGrant(granted, key, name);
    return { granted, key };
  } catch (error) {
    key.privatePem.fill(0);
    throw error;
  } finally {
    code.password.fill(0);
    client?.wipe();
    link?.close();
  }
}

/**
 * Pairs with the server at `pairUrl` using the one-time `code` and returns the credentials without
 * writing anything: for an app that keeps them in a keychain. Every failure is a KeywardError:
 * `WrongCode`, `Unreachable`, `Timeout`, `Protocol` or `Refused`.
 */
export async function pairInMemory(options: PairInMemoryOptions): Promise<PairedClient> {
  return typed(() => pairInMemoryInner(checkOptions(options)));
}

async function pairInMemoryInner(options: PairInMemoryOptions): Promise<PairedClient> {
  const code = takeCode(options.code);
  try {
    const timeoutMs = timeoutOf(options);
    const name = nameOf(options);
    const { granted, key } = await exchange(code, options.pairUrl, name, timeoutMs, options.random ?? defaultRandom);
    const keyPem = new TextDecoder().decode(key.privatePem);
    key.privatePem.fill(0);
    return {
      name: granted.name,
      role: granted.role,
      caPem: granted.ca_certificate,
      certPem: granted.certificate,
      keyPem,
      endpoints: { url: granted.endpoints.url, quic: granted.endpoints.quic },
    };
  } finally {
    code.password.fill(0);
  }
}

/**
 * Pairs with the server at `pairUrl` using the one-time `code` and writes the bundle to `out`
 * (`ca.crt`, `client.crt`, `client.key` 0600, `keyward.toml`; the directory made 0700), as
 * `keyward pair --out` does; returns `out`. `out` is checked before the code is spent. Every failure
 * is a KeywardError: `WrongCode`, `Unreachable`, `Timeout`, `Protocol`, `Refused` or `Bundle`.
 */
export async function pair(options: PairOptions): Promise<string> {
  return typed(() => pairInner(checkOptions(options)));
}

async function pairInner(options: PairOptions): Promise<string> {
  const code = takeCode(options.code);
  try {
    const timeoutMs = timeoutOf(options);
    const name = nameOf(options);
    const out = options.out;
    if (typeof out !== 'string' || out === '') {
      throw new KeywardError('Bundle', 'out must name the directory to write the bundle to', { code: CLIENT_CODES.local });
    }
    parsePairUrl(options.pairUrl);
    // Refuse a directory a bundle cannot be written to before the code is spent.
    await checkBundleTarget(out);
    const { granted, key } = await exchange(code, options.pairUrl, name, timeoutMs, options.random ?? defaultRandom);
    try {
      await writeBundle(out, granted, key.privatePem);
    } catch (error) {
      const why = error instanceof KeywardError ? error.message : String(error);
      throw new KeywardError(
        'Bundle',
        `${why}; the server registered client '${granted.name}' but its key is lost: revoke it ` +
          `(\`keyward clients revoke ${granted.name}\`) and pair again with a new code`,
        { code: CLIENT_CODES.local, cause: error },
      );
    } finally {
      key.privatePem.fill(0);
    }
    return out;
  } finally {
    code.password.fill(0);
  }
}
