// A V3 secure session over any Link (the Rust driver's `SecureSession`, transports/driver/src/
// client.rs): init_secure_api, the session id where the link carries one (HTTP's Keyward-Session
// header), a re-key before the server's per-session cap, and on −32001 one new init and one resend
// (−32001 means the call did not run). Calls on one session run one at a time, in order; every
// exchange has a timeout.

import { CLIENT_CODES, KeywardError, SESSION_GONE, asKeywardError, timedOut } from './errors.js';
import { Session, type RandomSource } from './session.js';

/** One exchange's answer. */
export interface Exchange {
  /** The answer's bytes. */
  body: Uint8Array;
  /** The session id the server announced with it (HTTP's `Keyward-Session` answer header), else null. */
  session: string | null;
}

/**
 * "Send these bytes, get those bytes": one connection to a Keyward server over some transport.
 * HTTP sends `session` in its Keyward-Session header; transports whose connection owns the session
 * (Unix socket, native messaging) ignore it. Failures are KeywardErrors (Unreachable, Timeout, Tls,
 * Closed, Protocol, …); a link gives up after `timeoutMs`.
 */
export interface Link {
  exchange(body: Uint8Array, session: string | null, timeoutMs: number): Promise<Exchange>;
  close(): Promise<void>;
}

/** How a {@link SecureSession} behaves. */
export interface SecureSessionOptions {
  /** Randomness for keys and nonces (default `crypto.getRandomValues`). */
  random?: RandomSource;
  /** The longest wait for one answer, in ms (default 30 000). */
  timeoutMs?: number;
  /** Re-key (an encrypted init_secure_api) after this many calls on one key; 0 never (default 4 096). */
  rekeyAfter?: number;
  /** Name the session in each request where the link can (HTTP header) (default true). */
  namesSession?: boolean;
  /** On −32001, run init_secure_api again and resend the call once (default true). */
  reinitWhenGone?: boolean;
}

/** The default longest wait for one answer. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** The default number of calls on one key before a re-key. */
export const DEFAULT_REKEY_AFTER = 4_096;

function isSessionGone(error: unknown): boolean {
  return error instanceof KeywardError && error.code === SESSION_GONE;
}

/** Rejects with a Timeout when `promise` has not settled within `ms` (a link that ignores its timeout). */
async function within<T>(promise: Promise<T>, ms: number, where: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    // A little later than the link's own timer, whose error names the transport better.
    timer = setTimeout(() => reject(timedOut(where, ms)), ms + 250);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** A V3 secure session over a link. */
export class SecureSession {
  readonly session: Session;
  private readonly link: Link;
  private readonly timeoutMs: number;
  private readonly rekeyAfter: number;
  private readonly namesSession: boolean;
  private readonly reinitWhenGone: boolean;
  private id: string | null = null;
  private onKey = 0;
  private tail: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(link: Link, options: SecureSessionOptions = {}) {
    this.link = link;
    this.session = new Session(options.random ? { random: options.random } : {});
    this.timeoutMs = positive(options.timeoutMs, DEFAULT_TIMEOUT_MS, 'timeoutMs');
    this.rekeyAfter = options.rekeyAfter ?? DEFAULT_REKEY_AFTER;
    this.namesSession = options.namesSession ?? true;
    this.reinitWhenGone = options.reinitWhenGone ?? true;
  }

  /** Runs init_secure_api over `link` and returns the session. */
  static async open(link: Link, options: SecureSessionOptions = {}): Promise<SecureSession> {
    const secure = new SecureSession(link, options);
    await secure.init();
    return secure;
  }

  /** The session id the server announced (HTTP), if any. */
  get sessionId(): string | null {
    return this.id;
  }

  /** Calls made under the current key. */
  get callsOnKey(): number {
    return this.onKey;
  }

  /** Runs `task` after every call queued before it (one exchange in flight per session). */
  private queue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.tail.then(() => {
      if (this.closed) throw new KeywardError('Closed', 'this Keyward connection was closed', { code: CLIENT_CODES.local });
      return task();
    });
    this.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run.catch((error: unknown) => {
      throw asKeywardError(error, 'the call failed');
    });
  }

  /** A plaintext init_secure_api: a new session (and on HTTP a new session id). */
  init(): Promise<void> {
    return this.queue(() => this.initNow());
  }

  /** An encrypted init_secure_api: a new key for the same session. */
  rekey(): Promise<void> {
    return this.queue(() => this.rekeyNow());
  }

  /** One encrypted call: its `Ok` value, or a KeywardError. */
  call(method: string, params: unknown): Promise<unknown> {
    return this.queue(() => this.callNow(method, params));
  }

  /** Sends raw bytes as this session would (naming it where the link can); the answer's bytes. */
  send(body: Uint8Array): Promise<Uint8Array> {
    return this.queue(async () => (await this.exchange(body, this.namedId())).body);
  }

  /** Closes the link; later calls fail with variant Closed. Waits for the call in flight. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.tail;
    this.closed = true;
    this.session.reset();
    try {
      await this.link.close();
    } catch {
      // Closing is best effort: the connection is dropped either way.
    }
  }

  private namedId(): string | null {
    return this.namesSession ? this.id : null;
  }

  private async exchange(body: Uint8Array, session: string | null) {
    try {
      return await within(this.link.exchange(body, session, this.timeoutMs), this.timeoutMs, 'the server');
    } catch (error) {
      throw asKeywardError(error, 'the transport failed');
    }
  }

  private async initNow(): Promise<void> {
    const answer = await this.exchange(this.session.initRequest(), null);
    await this.session.handleInitAnswer(answer.body);
    this.id = answer.session;
    this.onKey = 0;
  }

  private async rekeyNow(): Promise<void> {
    const { body, pending } = await this.session.sealReinit();
    let answer;
    try {
      answer = await this.exchange(body, this.namedId());
    } catch (error) {
      pending.rekeySecret?.fill(0);
      throw error;
    }
    await this.session.open(pending, answer.body);
    this.onKey = 0;
  }

  private async callNow(method: string, params: unknown): Promise<unknown> {
    if (this.rekeyAfter > 0 && this.onKey >= this.rekeyAfter) {
      try {
        await this.rekeyNow();
      } catch (error) {
        // The session ended before its re-key: a new one serves as well.
        if (!(isSessionGone(error) && this.reinitWhenGone)) throw error;
        await this.initNow();
      }
    }
    try {
      return await this.callOnce(method, params);
    } catch (error) {
      if (!(isSessionGone(error) && this.reinitWhenGone)) throw error;
      // −32001: the call did not run. A new session, and the same call once more (the params are
      // the caller's, still held by it: a Uint8Array secret is serialized again, not copied).
      await this.initNow();
      return await this.callOnce(method, params);
    }
  }

  private async callOnce(method: string, params: unknown): Promise<unknown> {
    const { body, pending } = await this.session.seal(method, params);
    const answer = await this.exchange(body, this.namedId());
    this.onKey += 1;
    return await this.session.open(pending, answer.body);
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new KeywardError('InvalidArgument', `${name} must be a positive number of milliseconds`, { code: CLIENT_CODES.local });
  }
  return value;
}
