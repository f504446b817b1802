// JSON written straight into bytes, as the Rust client writes it: object keys sorted (serde_json's
// map without `preserve_order` is a BTreeMap, so `json!` and `Value` params come out sorted; the
// transcript vectors are byte-identical only so), no white space, serde_json's string escapes.
//
// A `Uint8Array` value is a secret's UTF-8 bytes (a password, a mnemonic): it is written as a JSON
// string byte by byte, so it never becomes a JS string (which cannot be wiped). The buffer the JSON
// is written into is zeroed when it grows and by its owner once the request is sealed.

import { isUtf8 } from './bytes.js';
import { KeywardError } from './errors.js';

/** A JSON value as the server reads it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

const MAX_DEPTH = 64;

/** A growable byte buffer that wipes every block it leaves behind. */
export class ByteWriter {
  private buffer: Uint8Array;
  private length = 0;

  constructor(capacity = 1024) {
    this.buffer = new Uint8Array(capacity);
  }

  private reserve(extra: number): void {
    if (this.length + extra <= this.buffer.length) return;
    let capacity = this.buffer.length * 2;
    while (capacity < this.length + extra) capacity *= 2;
    const bigger = new Uint8Array(capacity);
    bigger.set(this.buffer.subarray(0, this.length));
    this.buffer.fill(0);
    this.buffer = bigger;
  }

  byte(value: number): void {
    this.reserve(1);
    this.buffer[this.length++] = value;
  }

  bytes(values: Uint8Array): void {
    this.reserve(values.length);
    this.buffer.set(values, this.length);
    this.length += values.length;
  }

  /** ASCII or any string: written as UTF-8. */
  text(value: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    this.reserve(value.length * 3);
    const { written } = encoder.encodeInto(value, this.buffer.subarray(this.length));
    this.length += written;
  }

  /** The bytes written so far (a view: wipe() clears them). */
  view(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }

  /** Zeroes the whole buffer. */
  wipe(): void {
    this.buffer.fill(0);
    this.length = 0;
  }
}

const encoder = new TextEncoder();

function invalid(message: string): KeywardError {
  return new KeywardError('InvalidParams', `the params cannot be sent: ${message}`);
}

/** Code-point order, which is the UTF-8 byte order serde_json's BTreeMap sorts keys in. */
export function compareKeys(a: string, b: string): number {
  const left = Array.from(a);
  const right = Array.from(b);
  const n = Math.min(left.length, right.length);
  for (let i = 0; i < n; i++) {
    const x = left[i]!.codePointAt(0)!;
    const y = right[i]!.codePointAt(0)!;
    if (x !== y) return x - y;
  }
  return left.length - right.length;
}

const SHORT_ESCAPES: Record<number, number> = { 0x08: 0x62, 0x09: 0x74, 0x0a: 0x6e, 0x0c: 0x66, 0x0d: 0x72 };

/** A JSON string from UTF-8 bytes, escaped as serde_json escapes (`"`, `\`, control characters). */
function writeSecretString(out: ByteWriter, bytes: Uint8Array): void {
  if (!isUtf8(bytes)) throw invalid('a Uint8Array value is not UTF-8 text');
  out.byte(0x22);
  for (const b of bytes) {
    if (b === 0x22 || b === 0x5c) {
      out.byte(0x5c);
      out.byte(b);
    } else if (b < 0x20) {
      out.byte(0x5c);
      const short = SHORT_ESCAPES[b];
      if (short !== undefined) out.byte(short);
      else out.text(`u00${b.toString(16).padStart(2, '0')}`);
    } else {
      out.byte(b);
    }
  }
  out.byte(0x22);
}

function isPlainObject(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function writeValue(out: ByteWriter, value: unknown, depth: number): void {
  if (depth > MAX_DEPTH) throw invalid(`nested deeper than ${MAX_DEPTH} levels (or circular)`);
  if (value === null) return out.text('null');
  switch (typeof value) {
    case 'boolean':
      return out.text(value ? 'true' : 'false');
    case 'number':
      if (!Number.isFinite(value)) throw invalid('a number is not finite');
      return out.text(JSON.stringify(value));
    case 'string':
      // JSON.stringify escapes exactly as serde_json does for any well-formed string.
      return out.text(JSON.stringify(value));
    case 'object':
      break;
    default:
      throw invalid(`a ${typeof value} is not a JSON value`);
  }
  if (value instanceof Uint8Array) return writeSecretString(out, value);
  if (Array.isArray(value)) {
    out.byte(0x5b);
    value.forEach((item: unknown, index) => {
      if (index > 0) out.byte(0x2c);
      writeValue(out, item === undefined ? null : item, depth + 1);
    });
    return out.byte(0x5d);
  }
  if (!isPlainObject(value)) throw invalid('an object that is not a plain object is not a JSON value');
  const entries = Object.entries(value).filter(([, item]) => item !== undefined);
  entries.sort(([a], [b]) => compareKeys(a, b));
  out.byte(0x7b);
  entries.forEach(([key, item], index) => {
    if (index > 0) out.byte(0x2c);
    out.text(JSON.stringify(key));
    out.byte(0x3a);
    writeValue(out, item, depth + 1);
  });
  out.byte(0x7d);
}

/** Writes `value` as JSON into `out` (keys sorted; Uint8Array as UTF-8 strings). */
export function writeJson(out: ByteWriter, value: unknown): void {
  writeValue(out, value, 0);
}

/** `value` as JSON bytes (for values with no secrets: the caller owns and may wipe the result). */
export function jsonBytes(value: unknown): Uint8Array {
  const out = new ByteWriter(256);
  writeJson(out, value);
  return out.view().slice();
}

/** Whether `value` is a JSON object (not an array, not null). */
export function isObject(value: unknown): value is { [key: string]: unknown } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An own member of a JSON object (never one from its prototype). */
export function member(value: unknown, name: string): unknown {
  return isObject(value) && Object.hasOwn(value, name) ? value[name] : undefined;
}

/** Whether the JSON object has the own member `name`. */
export function hasMember(value: unknown, name: string): boolean {
  return isObject(value) && Object.hasOwn(value, name);
}
