// A native-messaging host spoken to as a browser speaks to it (spec/native-messaging.md): the link
// starts the host process and exchanges frames on its standard input and output, each a 32-bit
// length in the machine's byte order and that many bytes of JSON. For tests and for Node programs
// that reach keyward through an installed host (`keyward native-host install`).

import { spawn, type ChildProcess } from 'node:child_process';
import { endianness } from 'node:os';

import { CLIENT_CODES, KeywardError, closedEarly, protocolError, timedOut, transportFailed } from '../errors.js';
import type { Exchange, Link } from '../secure.js';
import { FrameReader, frame } from './frames.js';

/** The browsers' limit on one message from a host (and the host's own on both directions). */
export const NATIVE_MAX_MESSAGE = 1024 * 1024;

/** How to start the host. */
export interface NativeHostOptions {
  /**
   * The program: the wrapper `keyward native-host install` wrote (`DATA_DIR/native-host/NAME/
   * keyward-native-host`), or the keyward binary with args `native-host --bundle DIR`.
   */
  command: string;
  /** Its arguments; a browser passes the caller's origin (`chrome-extension://ID/`) last. */
  args?: string[];
  /** Extra environment. */
  env?: Record<string, string>;
}

interface Slot {
  resolve(body: Uint8Array): void;
  reject(error: KeywardError): void;
  /** Timed out: its answer, when it comes, is dropped (answers come in order, one per message). */
  abandoned: boolean;
}

/** A link through a native-messaging host process. */
export class NativeStdioLink implements Link {
  private readonly options: NativeHostOptions;
  private readonly littleEndian = endianness() === 'LE';
  private child: ChildProcess | null = null;
  private reader = new FrameReader(NATIVE_MAX_MESSAGE, this.littleEndian);
  private slots: Slot[] = [];
  private stderrTail = '';
  private closing = false;

  constructor(options: NativeHostOptions) {
    this.options = options;
  }

  private get where(): string {
    return `the native host ${this.options.command}`;
  }

  private start(): ChildProcess {
    const child = spawn(this.options.command, this.options.args ?? [], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...this.options.env },
    });
    this.child = child;
    this.reader = new FrameReader(NATIVE_MAX_MESSAGE, this.littleEndian);
    child.stdout?.on('data', (chunk: Buffer) => this.take(child, chunk));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (text: string) => {
      this.stderrTail = (this.stderrTail + text).slice(-2000);
    });
    // A host that exits while we write gets EPIPE: the exit handler reports it.
    child.stdin?.on('error', () => undefined);
    child.on('error', (error) => this.fail(child, transportFailed(this.where, `it could not be started (${error.message})`, error)));
    this.hold(child, false);
    child.on('exit', (code, signal) => {
      const tail = this.stderrTail.trim().split('\n').pop() ?? '';
      const detail = this.reader.midFrame ? 'in the middle of a frame' : 'before it answered';
      const how = signal ? `killed by ${signal}` : `status ${code}`;
      this.fail(child, closedEarly(this.where, `${detail} (it exited, ${how}${tail ? `: ${tail}` : ''})`));
    });
    return child;
  }

  private take(child: ChildProcess, chunk: Buffer): void {
    let frames: Uint8Array[];
    try {
      frames = this.reader.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    } catch (error) {
      this.fail(child, error instanceof KeywardError ? error : protocolError('a bad frame'));
      child.kill('SIGKILL');
      return;
    }
    for (const body of frames) {
      const slot = this.slots.shift();
      if (!slot) {
        this.fail(child, protocolError('the native host sent a message nobody asked for'));
        child.kill('SIGKILL');
        return;
      }
      if (!slot.abandoned) slot.resolve(body);
    }
  }

  /**
   * Whether the host keeps this process alive: only while a request waits. An idle host does not
   * (a program that forgets close() still exits, and the host sees its input end and exits too).
   */
  private hold(child: ChildProcess, on: boolean): void {
    const method = on ? 'ref' : 'unref';
    for (const handle of [child, child.stdin, child.stdout, child.stderr]) {
      const toggle: unknown = handle ? Reflect.get(handle, method) : undefined;
      if (typeof toggle === 'function') toggle.call(handle);
    }
  }

  /** Rejects every waiting request; the next exchange starts a new host. */
  private fail(child: ChildProcess, error: KeywardError): void {
    if (this.child !== child) return;
    this.child = null;
    for (const slot of this.slots.splice(0)) if (!slot.abandoned) slot.reject(error);
  }

  async exchange(body: Uint8Array, _session: string | null, timeoutMs: number): Promise<Exchange> {
    if (this.closing) throw closedEarly(this.where, 'because the link was closed');
    if (body.length > NATIVE_MAX_MESSAGE) {
      throw new KeywardError('InvalidArgument', `a message of ${body.length} bytes is above the native-messaging limit of 1 MiB`, {
        code: CLIENT_CODES.local,
      });
    }
    const child = this.child ?? this.start();
    const answer = await new Promise<Uint8Array>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.slots.every((s) => s.abandoned)) this.hold(child, false);
      };
      const slot: Slot = {
        resolve: (b) => {
          done();
          resolve(b);
        },
        reject: (e) => {
          done();
          reject(e);
        },
        abandoned: false,
      };
      const timer = setTimeout(() => {
        slot.abandoned = true;
        done();
        reject(timedOut(this.where, timeoutMs));
      }, timeoutMs);
      this.slots.push(slot);
      this.hold(child, true);
      child.stdin?.write(frame(body, this.littleEndian));
    });
    return { body: answer, session: null };
  }

  /** Closes the host's standard input (a host exits with status 0) and waits for it; kills it after 1 s. */
  async close(): Promise<void> {
    this.closing = true;
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    child.stdin?.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), 1000);
    await exited;
    clearTimeout(timer);
  }
}
