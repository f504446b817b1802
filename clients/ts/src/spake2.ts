// SPAKE2 over Ed25519 exactly as the Rust crate `spake2` 0.4 computes it, without any I/O; the pairing
// exchange of spec/pairing.md built on it (codes, the key schedule, the confirmations, the sealed
// messages and the four messages' strict JSON) is src/pair-exchange.ts. No Node built-in is used here (WebCrypto and @noble only), so this
// module also runs in a browser; src/pairing.ts carries it over TCP and writes the bundle.
//
// SPAKE2 (crate spake2 0.4, group Ed25519):
// * the password scalar is HKDF-SHA256(salt = "", ikm = password, info = "SPAKE2 pw", 48 bytes) read
//   as a big-endian integer, modulo the group order l;
// * a side's secret scalar is 64 random bytes read as a little-endian integer modulo l (curve25519-dalek's
//   `Scalar::random`), so fixed randomness gives the crate's messages byte for byte;
// * side A sends 'A' ‖ (x·B + pw·M), side B sends 'B' ‖ (y·B + pw·N), points compressed (32 bytes);
// * A's key point is x·(Y − pw·N), B's is y·(X − pw·M); the key is
//   SHA-256(SHA-256(pw) ‖ SHA-256(idA) ‖ SHA-256(idB) ‖ X ‖ Y ‖ K), with X, Y the points as sent.

import { ed25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';

const Point = ed25519.Point;
type EdPoint = ReturnType<typeof Point.fromBytes>;

/** The order l of the Ed25519 prime-order group. */
const ORDER: bigint = Point.Fn.ORDER;

/** The crate's M and N (spake2 0.4, src/ed25519.rs, as python-spake2's ParamsEd25519). */
const M_HEX = '15cfd18e385952982b6a8f8c7854963b58e34388c8e6dae891db756481a02312';
const N_HEX = 'f04f2e7eb734b2a8f8b472eaf9c3c632576ac64aea650b496a8a20ff00e583c3';
const M: EdPoint = Point.fromHex(M_HEX);
const N: EdPoint = Point.fromHex(N_HEX);

const SIDE_A = 0x41; // 'A'
const SIDE_B = 0x42; // 'B'

/** `random(n)`: n bytes from a cryptographically secure source. */
export type RandomSource = (n: number) => Uint8Array;

/** WebCrypto's randomness (Node ≥ 20, Electron, browsers). */
export const defaultRandom: RandomSource = (n) => globalThis.crypto.getRandomValues(new Uint8Array(n));

/** Why SPAKE2 could not finish (the crate's `spake2::Error`): the other side's message is not one. */
export class Spake2Error extends Error {
  readonly reason: 'WrongLength' | 'BadSide' | 'CorruptMessage';
  constructor(reason: 'WrongLength' | 'BadSide' | 'CorruptMessage') {
    super(`not a SPAKE2 message of the other side (${reason})`);
    this.name = 'Spake2Error';
    this.reason = reason;
  }
}

const encoder = new TextEncoder();

function bytesToBigIntLE(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i] as number);
  return n;
}

function bytesToBigIntBE(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const byte of bytes) n = (n << 8n) | BigInt(byte);
  return n;
}

/** Little-endian 32 bytes of a scalar (as curve25519-dalek's `Scalar::to_bytes`). */
export function scalarToBytes(scalar: bigint): Uint8Array {
  const out = new Uint8Array(32);
  let n = scalar;
  for (let i = 0; i < 32; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

/** The crate's `hash_to_scalar`: HKDF-SHA256(salt "", info "SPAKE2 pw", 48 bytes), big-endian, mod l. */
export function passwordToScalar(password: Uint8Array): bigint {
  const okm = hkdf(sha256, password, new Uint8Array(0), encoder.encode('SPAKE2 pw'), 48);
  const scalar = bytesToBigIntBE(okm) % ORDER;
  okm.fill(0);
  return scalar;
}

/** curve25519-dalek's `Scalar::random`: 64 bytes, little-endian, mod l. */
export function scalarFromRandom(bytes: Uint8Array): bigint {
  if (bytes.length !== 64) throw new RangeError('a SPAKE2 scalar takes 64 random bytes');
  return bytesToBigIntLE(bytes) % ORDER;
}

/** s·P for any s in [0, l) (noble's multiply refuses 0; the crate's is the identity). */
function mul(point: EdPoint, scalar: bigint): EdPoint {
  return scalar === 0n ? Point.ZERO : point.multiply(scalar);
}

/** One side of a SPAKE2 exchange (asymmetric: A is the client, B the server). Single use. */
export class Spake2 {
  /** This side's message: its side byte and its blinded point (33 bytes). */
  readonly message: Uint8Array;
  readonly #side: number;
  #xy: bigint;
  #pw: bigint;
  readonly #pwHash: Uint8Array;
  readonly #idA: Uint8Array;
  readonly #idB: Uint8Array;
  #done = false;

  private constructor(side: number, password: Uint8Array, idA: Uint8Array, idB: Uint8Array, random: RandomSource) {
    this.#side = side;
    const drawn = random(64);
    if (!(drawn instanceof Uint8Array) || drawn.length !== 64) throw new RangeError('random(64) must give 64 bytes');
    this.#xy = scalarFromRandom(drawn);
    drawn.fill(0);
    this.#pw = passwordToScalar(password);
    // The transcript needs only SHA-256(password): the password itself is not kept.
    this.#pwHash = sha256(password);
    this.#idA = Uint8Array.from(idA);
    this.#idB = Uint8Array.from(idB);
    const blinding = side === SIDE_A ? M : N;
    const element = mul(Point.BASE, this.#xy).add(mul(blinding, this.#pw));
    const message = new Uint8Array(33);
    message[0] = side;
    message.set(element.toBytes(), 1);
    this.message = message;
  }

  /** Side A (`Spake2::start_a_with_rng`). */
  static startA(password: Uint8Array, idA: Uint8Array, idB: Uint8Array, random: RandomSource = defaultRandom): Spake2 {
    return new Spake2(SIDE_A, password, idA, idB, random);
  }

  /** Side B (`Spake2::start_b_with_rng`). */
  static startB(password: Uint8Array, idA: Uint8Array, idB: Uint8Array, random: RandomSource = defaultRandom): Spake2 {
    return new Spake2(SIDE_B, password, idA, idB, random);
  }

  /** The shared key (32 bytes) from the other side's message (`Spake2::finish`); throws Spake2Error. */
  finish(other: Uint8Array): Uint8Array {
    if (this.#done) throw new Error('a SPAKE2 side finishes once');
    this.#done = true;
    try {
      if (other.length !== 33) throw new Spake2Error('WrongLength');
      const expected = this.#side === SIDE_A ? SIDE_B : SIDE_A;
      if (other[0] !== expected) throw new Spake2Error('BadSide');
      const otherBytes = other.subarray(1);
      let element: EdPoint;
      try {
        // curve25519-dalek decompresses non-canonical y and x = 0 with the sign bit set: ZIP-215 rules.
        element = Point.fromBytes(Uint8Array.from(otherBytes), true);
      } catch {
        throw new Spake2Error('CorruptMessage');
      }
      const unblinding = this.#side === SIDE_A ? N : M;
      const negPw = (ORDER - this.#pw) % ORDER;
      const keyPoint = mul(element.add(mul(unblinding, negPw)), this.#xy);
      const keyBytes = keyPoint.toBytes();
      const mine = this.message.subarray(1);
      const [first, second] = this.#side === SIDE_A ? [mine, otherBytes] : [otherBytes, mine];
      const transcript = new Uint8Array(6 * 32);
      transcript.set(this.#pwHash, 0);
      transcript.set(sha256(this.#idA), 32);
      transcript.set(sha256(this.#idB), 64);
      transcript.set(first, 96);
      transcript.set(second, 128);
      transcript.set(keyBytes, 160);
      const key = sha256(transcript);
      transcript.fill(0);
      keyBytes.fill(0);
      return key;
    } finally {
      this.wipe();
    }
  }

  /** Forgets the secrets this side holds (what JavaScript lets it: the bytes; bigints are immutable). */
  wipe(): void {
    this.#done = true;
    this.#pwHash.fill(0);
    this.#xy = 0n;
    this.#pw = 0n;
  }
}
