// A V3 secure session over any Link (the Rust driver's `SecureSession`, transports/driver/src/
// client.rs): init_secure_api, the session id where the link carries one (HTTP's Keyward-Session
// header), a re-key well before the server's per-key request cap (`[sessions] max_requests`,
// 1,048,576 requests by default; a re-key starts a new count), and on −32001 one new init and one
// resend (−32001 means the call did not run). Calls on one session run one at a time, in order;
// every exchange has a timeout.
//
// Two cases where the client cannot know what the server did, handled so that no call runs twice:
// * The link resent a request (HTTP, after a keep-alive connection was reset as it went out,
//   `Exchange.resent`): the first copy may have run. A −32001 or a −32002 replay answer to the
//   resend (or any other failure of it) is then OutcomeUnknown, never a new init and a third send.
//   A plaintext init_secure_api may be resent freely.
// * A re-key went out and no answer under the old key came back (a timeout, a transport error, an
//   unusable answer): the server may be on a key this client never got. The next call starts a new
//   session first. And the first call on a key a re-key just made that the server cannot decrypt
//   (−32002 "Decryption error": it did not run) gets a new session and is resent once.

import { CLIENT_CODES, KeywardError, SESSION_GONE, asKeywardError, outcomeUnknown, timedOut } from './errors.js';
import { Session, okValue, type RandomSource } from './session.js';

/** One exchange's answer. */
export interface Exchange {
  /** The answer's bytes. */
  body: Uint8Array;
  /** The session id the server announced with it (HTTP's `Keyward-Session` answer header), else null. */
  session: string | null;
  /**
   * The link sent the request twice (HTTP: a reused keep-alive connection was reset as it went out)
   * and this is the answer to the second copy. The first copy may have reached the server and run.
   */
  resent?: boolean;
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
  /**
   * Re-key (an encrypted init_secure_api) after this many calls on one key; 0 never (default 4 096,
   * far below the server's per-key cap, `[sessions] max_requests`, 1,048,576 by default).
   */
  rekeyAfter?: number;
  /** Name the session in each request where the link can (HTTP header) (default true). */
  namesSession?: boolean;
  /** On −32001, run init_secure_api again and resend the call once (default true). */
  reinitWhenGone?: boolean;
}

/** The default longest wait for one answer. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/**
 * The default number of calls on one key before a re-key. The server ends a session after
 * `[sessions] max_requests` requests on one key (1,048,576 by default; a re-key starts a new count).
 */
export const DEFAULT_REKEY_AFTER = 4_096;

// Errors a link threw for the second copy of a request it resent (see resendFailed).
const RESENT_FAILURES = new WeakSet<object>();

/**
 * For links that resend: marks the error of a resent request's second copy (its first copy may
 * have reached the server and run). The session makes it an OutcomeUnknown for a call. Returns it.
 */
export function resendFailed<T>(error: T): T {
  if (typeof error === 'object' && error !== null) RESENT_FAILURES.add(error);
  return error;
}

function isResendFailure(error: unknown): boolean {
  return typeof error === 'object' && error !== null && RESENT_FAILURES.has(error);
}

function isSessionGone(error: unknown): boolean {
  return error instanceof KeywardError && error.code === SESSION_GONE;
}

/** A −32002 replay: the server had already accepted this envelope. */
function isReplay(error: unknown): boolean {
  return error instanceof KeywardError && error.code === -32002 && error.variant === 'Replay';
}

/** A −32002 "Decryption error": the server could not open the envelope under the session's key (it did not run). */
function isUndecryptable(error: unknown): boolean {
  return error instanceof KeywardError && error.code === -32002 && error.variant !== 'Replay' && /decrypt/i.test(error.message);
}

/** The error of a call that was not sent because the re-key before it failed. */
function notSent(error: unknown, method: string, newSession: boolean): KeywardError {
  const cause = asKeywardError(error, 'the re-key failed');
  const next = newSession ? '; the next call starts a new session' : '';
  return new KeywardError(cause.variant, `the session's re-key before ${method} failed, so ${method} was not sent${next}: ${cause.message}`, {
    code: cause.code,
    cause,
  });
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
  // A re-key went out and no answer under the old key came back: the server may be on a key this
  // client never got. The next call (or re-key) starts a new session instead.
  private keyUnknown = false;
  // The key is one a re-key just made, and no answer under it has come back yet.
  private keyUntried = false;
  private tail: Promise<void> = Promise.resolve();
  private closed = false;
  private linkClosed = false;

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

  /**
   * An encrypted init_secure_api: a new key for the same session. (After a re-key whose answer was
   * lost, a plaintext init instead: a new session, with a new key.)
   */
  rekey(): Promise<void> {
    return this.queue(() => (this.keyUnknown ? this.initNow() : this.rekeyNow()));
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
    await this.closeLink();
  }

  /**
   * Closes the link now, without waiting for the call in flight (it fails with the link, or gets
   * an answer already read); later calls fail with variant Closed. For a server known to be gone.
   */
  async drop(): Promise<void> {
    this.closed = true;
    void this.tail.then(() => this.session.reset());
    await this.closeLink();
  }

  private async closeLink(): Promise<void> {
    if (this.linkClosed) return;
    this.linkClosed = true;
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

  /** A plaintext init_secure_api (a link may resend it freely: an unused session costs nothing). */
  private async initNow(): Promise<void> {
    const answer = await this.exchange(this.session.initRequest(), null);
    await this.session.handleInitAnswer(answer.body);
    this.id = answer.session;
    this.onKey = 0;
    this.keyUnknown = false;
    this.keyUntried = false;
  }

  private async rekeyNow(): Promise<void> {
    const { body, pending } = await this.session.sealReinit();
    // Until an answer under the old key is read, whether the server switched keys is unknown.
    this.keyUnknown = true;
    let answer;
    try {
      answer = await this.exchange(body, this.namedId());
    } catch (error) {
      pending.rekeySecret?.fill(0);
      throw error;
    }
    // Throws for an answer that does not open under the old key (a plaintext envelope error, one
    // that does not authenticate, a re-key answer without a usable server key): still unknown.
    const inner = await this.session.openRaw(pending, answer.body);
    // It opened under the old key: the new key is in place, or the server refused the re-key under
    // the old key and both sides stay on it.
    this.keyUnknown = false;
    okValue(inner);
    this.onKey = 0;
    this.keyUntried = true;
  }

  private async callNow(method: string, params: unknown): Promise<unknown> {
    if (this.keyUnknown) {
      // A re-key whose answer was lost: the server may have dropped the key this client holds, and
      // would refuse every call under it. Start over with a new session.
      await this.initNow();
    }
    if (this.rekeyAfter > 0 && this.onKey >= this.rekeyAfter) {
      try {
        await this.rekeyNow();
      } catch (error) {
        // The session ended before its re-key: a new one serves as well.
        if (!(isSessionGone(error) && this.reinitWhenGone)) throw notSent(error, method, this.keyUnknown);
        await this.initNow();
      }
    }
    const untried = this.keyUntried;
    const sent = { resent: false };
    try {
      return await this.callOnce(method, params, sent);
    } catch (error) {
      // A request the link sent twice is never sent a third time (callOnce made any failure of it,
      // a −32001 or a replay above all, an OutcomeUnknown).
      if (sent.resent) throw error;
      // −32001: the call did not run. −32002 "Decryption error" on the first call under a key a
      // re-key just made: the server is not on that key (its re-key did not take), and could not
      // open the call, so it did not run. Either way: a new session, and the same call once more
      // (the params are the caller's, still held by it: a Uint8Array secret is serialized again,
      // not copied).
      const gone = isSessionGone(error) && this.reinitWhenGone;
      if (!gone && !(untried && isUndecryptable(error))) throw error;
      await this.initNow();
      return await this.callOnce(method, params, sent);
    }
  }

  /** One exchange of a sealed call; `sent.resent` says whether the link sent it twice. */
  private async callOnce(method: string, params: unknown, sent: { resent: boolean }): Promise<unknown> {
    const { body, pending } = await this.session.seal(method, params);
    let answer: Exchange;
    try {
      answer = await this.exchange(body, this.namedId());
    } catch (error) {
      // The link resent the request after a reset, and the resend failed too: the first copy may
      // have run.
      if (!isResendFailure(error)) throw error;
      sent.resent = true;
      throw outcomeUnknown(method, asKeywardError(error, 'the resend failed'));
    }
    sent.resent = answer.resent === true;
    this.onKey += 1;
    let inner: unknown;
    try {
      inner = await this.session.openRaw(pending, answer.body);
    } catch (error) {
      // The link resent the request after a reset: the first copy may have run. A −32001 (the
      // server restarted in between), a replay (it had run it) or any other answer that is not
      // the call's own cannot tell whether it did: never a resend, and never "it did not run".
      if (sent.resent) throw outcomeUnknown(method, asKeywardError(error, 'the resend failed'));
      throw error;
    }
    // An answer under the key (a result or the call's own error): the key works.
    this.keyUntried = false;
    return okValue(inner);
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new KeywardError('InvalidArgument', `${name} must be a positive number of milliseconds`, { code: CLIENT_CODES.local });
  }
  return value;
}
