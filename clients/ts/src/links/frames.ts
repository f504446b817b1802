// Length-prefixed frames, as the Unix socket (4-byte big-endian length) and native messaging (4-byte
// native-endian length) carry them. Sans-IO and browser-safe: bytes in, whole frames out. A length
// above the limit is refused from its four bytes, before any of the body is buffered.

import { protocolError } from '../errors.js';

/** Splits a byte stream into frames. */
export class FrameReader {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  // The length of the frame being read, once its four bytes are in.
  private expected: number | null = null;
  private readonly maxFrame: number;
  private readonly littleEndian: boolean;

  constructor(maxFrame: number, littleEndian: boolean) {
    this.maxFrame = maxFrame;
    this.littleEndian = littleEndian;
  }

  /** Whether part of a frame has arrived and the rest has not (a close now truncates it). */
  get midFrame(): boolean {
    return this.buffered > 0;
  }

  /** Takes bytes; returns the frames they complete. Throws a KeywardError on an oversized length. */
  push(chunk: Uint8Array): Uint8Array[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Uint8Array[] = [];
    for (;;) {
      if (this.expected === null) {
        if (this.buffered < 4) return frames;
        const header = this.peek(4);
        const length = new DataView(header.buffer, header.byteOffset, 4).getUint32(0, this.littleEndian);
        if (length > this.maxFrame) {
          throw protocolError(`a frame of ${length} bytes is larger than the limit of ${this.maxFrame} bytes`);
        }
        this.expected = length;
      }
      if (this.buffered < 4 + this.expected) return frames;
      const whole = this.take(4 + this.expected);
      this.expected = null;
      frames.push(whole.subarray(4));
    }
  }

  private peek(n: number): Uint8Array {
    this.coalesce();
    return this.chunks[0]!.subarray(0, n);
  }

  /** Joins the buffered chunks into one (frames are small; this keeps the code simple). */
  private coalesce(): void {
    if (this.chunks.length <= 1) return;
    const joined = new Uint8Array(this.buffered);
    let offset = 0;
    for (const chunk of this.chunks) {
      joined.set(chunk, offset);
      offset += chunk.length;
    }
    this.chunks = [joined];
  }

  private take(n: number): Uint8Array {
    this.coalesce();
    const all = this.chunks[0]!;
    const taken = all.slice(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return taken;
  }
}

/** `body` with its 4-byte length in front. */
export function frame(body: Uint8Array, littleEndian: boolean): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length, littleEndian);
  out.set(body, 4);
  return out;
}
