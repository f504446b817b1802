// JSON-RPC over a Unix-domain socket (spec/transport-unix.md): each message a 4-byte big-endian
// length and that many bytes, one answer per request, in order. The session belongs to the
// connection: a new connection (after a close, a timeout or a server restart) means a new session,
// which the secure session makes on the −32001 its first request gets.

import * as net from 'node:net';

import { KeywardError, closedEarly, protocolError, timedOut, transportFailed, unreachable } from '../errors.js';
import type { Exchange, Link } from '../secure.js';
import { FrameReader, frame } from './frames.js';

/** The largest answer frame taken (the server's own messages are at most 1 MiB by default). */
export const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;

interface Waiter {
  resolve(body: Uint8Array): void;
  reject(error: KeywardError): void;
}

function errorCode(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') return error.code;
  return '';
}

/** A link over a Unix socket. */
export class UnixLink implements Link {
  private readonly path: string;
  private readonly where: string;
  private readonly maxFrame: number;
  private socket: net.Socket | null = null;
  private reader: FrameReader;
  private waiter: Waiter | null = null;

  constructor(path: string, options: { maxFrameBytes?: number } = {}) {
    this.path = path;
    this.where = `unix:${path}`;
    this.maxFrame = options.maxFrameBytes ?? DEFAULT_MAX_FRAME;
    this.reader = new FrameReader(this.maxFrame, false);
  }

  async exchange(body: Uint8Array, _session: string | null, timeoutMs: number): Promise<Exchange> {
    const deadline = Date.now() + timeoutMs;
    const socket = this.socket ?? (await this.connect(timeoutMs));
    const answer = await this.request(socket, body, Math.max(1, deadline - Date.now()), timeoutMs);
    return { body: answer, session: null };
  }

  private connect(timeoutMs: number): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path: this.path });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(timedOut(this.where, timeoutMs));
      }, timeoutMs);
      socket.once('error', (error) => {
        clearTimeout(timer);
        const code = errorCode(error);
        if (code === 'ENOENT' || code === 'ECONNREFUSED') reject(unreachable(this.where, error));
        else if (code === 'EACCES') reject(transportFailed(this.where, 'permission denied: this user may not open the socket', error));
        else reject(transportFailed(this.where, code || 'connect failed', error));
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        this.attach(socket);
        resolve(socket);
      });
    });
  }

  /** Wires a connected socket's events to the waiting request. */
  private attach(socket: net.Socket): void {
    this.socket = socket;
    // An idle connection does not keep the process alive (as Node's HTTP agent treats free sockets).
    socket.unref();
    this.reader = new FrameReader(this.maxFrame, false);
    socket.on('data', (chunk: Buffer) => {
      let frames: Uint8Array[];
      try {
        frames = this.reader.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      } catch (error) {
        this.fail(socket, error instanceof KeywardError ? error : protocolError('a bad frame'));
        return;
      }
      for (const body of frames) {
        const waiter = this.waiter;
        this.waiter = null;
        if (waiter) waiter.resolve(body);
        else this.fail(socket, protocolError('a frame nobody asked for'));
      }
    });
    socket.on('error', (error) => this.fail(socket, transportFailed(this.where, errorCode(error) || 'socket error', error)));
    socket.on('close', () => {
      const why = this.reader.midFrame
        ? protocolError('the server closed the connection in the middle of a frame (a truncated frame)')
        : closedEarly(this.where, 'without an answer (this uid may not be a registered client, or it was revoked: `keyward clients list`)');
      this.fail(socket, why);
    });
  }

  /** Ends the connection and rejects the request waiting on it. */
  private fail(socket: net.Socket, error: KeywardError): void {
    if (this.socket === socket) this.socket = null;
    socket.destroy();
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.reject(error);
  }

  private request(socket: net.Socket, body: Uint8Array, remainingMs: number, timeoutMs: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // A late answer must not be taken for the next request's: the connection goes with it.
        this.fail(socket, timedOut(this.where, timeoutMs));
      }, remainingMs);
      const done = (): void => {
        clearTimeout(timer);
        socket.unref();
      };
      this.waiter = {
        resolve: (answer) => {
          done();
          resolve(answer);
        },
        reject: (error) => {
          done();
          reject(error);
        },
      };
      socket.ref();
      socket.write(frame(body, false));
    });
  }

  async close(): Promise<void> {
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter?.reject(closedEarly(this.where, 'because the link was closed'));
      socket.destroy();
    }
  }
}
