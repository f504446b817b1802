// launch(): a front end starts its own back end, `keyward serve --launcher`, and connects to it.
//
// The launched server makes a CA, a server certificate and one client certificate in memory for
// that run only and prints exactly one JSON line on its standard output:
//   {"keyward":VERSION,"pid":N,"url":"https://127.0.0.1:PORT/v3/owner","quic":"127.0.0.1:PORT"|null,
//    "ca":PEM,"cert":PEM,"key":PEM}
// launch() reads that line from the pipe (the credentials never touch a disk), connects over HTTPS
// with mTLS as the server's owner client `launcher`, and keeps the server's standard input open: the
// server exits when it closes (stop(), or this process ending in any way) or when this process dies
// (PR_SET_PDEATHSIG on Linux). Once ready, the child and its pipes are unref'd: a program that never
// calls stop() still exits when it has nothing else to do, and the server then sees its stdin close.

import { spawn, type ChildProcess } from 'node:child_process';

import { Keyward } from './client.js';
import { connect } from './connect.js';
import { CLIENT_CODES, KeywardError, cleanText } from './errors.js';
import type { SecureSessionOptions } from './secure.js';

/** How long launch() waits for the server's line by default. */
export const DEFAULT_LAUNCH_TIMEOUT_MS = 30_000;

/** How long stop() waits for the server to exit before it kills it. */
export const DEFAULT_STOP_TIMEOUT_MS = 10_000;

/** The longest line a launched server prints (three PEMs and the addresses fit in 8 KiB). */
const MAX_LINE_BYTES = 64 * 1024;

/** What `launch()` takes. */
export interface LaunchOptions extends SecureSessionOptions {
  /** The `keyward` binary (default: `keyward` on PATH). */
  binary?: string;
  /** The data directory: the wallet store and audit log (default: the binary's, `~/.keyward`). */
  dataDir?: string;
  /** Also serve QUIC (default true; Node has no QUIC client, so the package itself uses HTTPS). */
  quic?: boolean;
  /** Also serve a Unix socket at this path (`keyward serve --unix`). */
  unix?: string;
  /** A TOML config file for the server (`keyward serve --config`). */
  config?: string;
  /** More arguments for `keyward serve --launcher`. */
  args?: readonly string[];
  /** The server's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Where the server's log (its standard error) goes: this process's stderr (default), or nowhere. */
  log?: 'inherit' | 'ignore';
  /** How long to wait for the server's line (default 30 s). */
  startTimeoutMs?: number;
  /** The largest answer taken, in bytes (default 16 MiB). */
  maxAnswerBytes?: number;
}

/** The launched server's line, without the credentials. */
export interface LaunchedServer {
  /** The server's version. */
  version: string;
  /** Its process id. */
  pid: number;
  /** Its HTTPS URL. */
  url: string;
  /** Its QUIC address, or null. */
  quic: string | null;
  /** The CA certificate of this run (PEM): the only root its clients trust. */
  ca: string;
}

/** How the launched server ended. */
export interface LaunchedExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A connection to a server this process launched: stop() ends both. */
export class LaunchedKeyward extends Keyward {
  /** The server's process id. */
  readonly pid: number;
  /** The server's version, addresses and CA (no secret). */
  readonly server: LaunchedServer;
  /** Resolves when the server process has exited, however it ended. */
  readonly exited: Promise<LaunchedExit>;
  private readonly child: ChildProcess;

  constructor(base: Keyward, child: ChildProcess, server: LaunchedServer, exited: Promise<LaunchedExit>) {
    super(base.session, base.info);
    this.child = child;
    this.pid = server.pid;
    this.server = server;
    this.exited = exited;
  }

  /**
   * Closes the server's standard input (the server closes every wallet, wipes its vault and exits)
   * and waits for it to exit; after `timeoutMs` (default 10 s) it is killed. The connection is
   * closed meanwhile: a call in flight gets its answer if the server sends it before it exits, and
   * fails otherwise; it never makes stop() wait longer than `timeoutMs` (and a moment).
   */
  async stop(timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<LaunchedExit> {
    // The exit is waited for now: hold the event loop again (launch() let go of it).
    this.child.ref();
    const stopping = stopChild(this.child, this.exited, timeoutMs);
    const closing = this.close().catch(() => undefined);
    const exit = await stopping;
    // An answer already on its way is still read; then whatever is in flight is dropped (the server
    // that would answer it is gone).
    await Promise.race([closing, pause(CLOSE_GRACE_MS)]);
    await this.session.drop();
    this.child.stdout?.destroy();
    this.child.stderr?.destroy();
    return exit;
  }
}

/** How long stop() lets the connection close by itself once the server has exited. */
const CLOSE_GRACE_MS = 100;

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function launchError(message: string, cause?: unknown): KeywardError {
  return new KeywardError('Launch', message, { code: CLIENT_CODES.local, cause });
}

function invalidArgument(message: string, cause?: unknown): KeywardError {
  return new KeywardError('InvalidArgument', `launch(): ${message}`, { code: CLIENT_CODES.local, cause });
}

/** A string without NUL (a path, an argument, an environment entry). */
function checkString(value: unknown, name: string, { empty = false } = {}): void {
  if (typeof value !== 'string') throw invalidArgument(`${name} must be a string`);
  if (!empty && value.length === 0) throw invalidArgument(`${name} must not be empty`);
  if (value.includes('\0')) throw invalidArgument(`${name} must not contain a NUL character`);
}

/** Refuses options of the wrong type before anything is spawned, naming the option. */
function checkOptions(options: LaunchOptions): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalidArgument('options must be an object');
  if (options.binary !== undefined) checkString(options.binary, 'binary');
  for (const name of ['dataDir', 'unix', 'config'] as const) {
    if (options[name] !== undefined) checkString(options[name], name);
  }
  if (options.quic !== undefined && typeof options.quic !== 'boolean') throw invalidArgument('quic must be true or false');
  if (options.args !== undefined) {
    if (!Array.isArray(options.args)) throw invalidArgument('args must be an array of strings');
    options.args.forEach((arg, i) => checkString(arg, `args[${i}]`, { empty: true }));
  }
  if (options.env !== undefined) {
    if (typeof options.env !== 'object' || options.env === null || Array.isArray(options.env)) throw invalidArgument('env must be an object of strings');
    for (const [name, value] of Object.entries(options.env as Record<string, unknown>)) {
      checkString(name, 'an env name');
      if (name.includes('=')) throw invalidArgument(`the env name ${JSON.stringify(name)} must not contain "="`);
      if (value === undefined) continue;
      // Node turns numbers and booleans into strings itself.
      if (!['string', 'number', 'boolean', 'bigint'].includes(typeof value)) throw invalidArgument(`env.${name} must be a string`);
      checkString(String(value), `env.${name}`, { empty: true });
    }
  }
  if (options.log !== undefined && options.log !== 'inherit' && options.log !== 'ignore') throw invalidArgument("log must be 'inherit' or 'ignore'");
  for (const name of ['startTimeoutMs', 'maxAnswerBytes'] as const) {
    const value = options[name];
    if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)) throw invalidArgument(`${name} must be a positive number`);
  }
}

/** Lets the event loop end while the child and its pipes are the only things left. */
function unrefChild(child: ChildProcess): void {
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) {
    (stream as unknown as { unref?: () => void } | null)?.unref?.();
  }
}

/** Closes the child's stdin and waits for its exit, killing it after `timeoutMs`. */
async function stopChild(child: ChildProcess, exited: Promise<LaunchedExit>, timeoutMs: number): Promise<LaunchedExit> {
  child.stdin?.end();
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, timeoutMs);
  });
  try {
    await Promise.race([exited, killed]);
    return await exited;
  } finally {
    clearTimeout(timer);
  }
}

/** The server's arguments for the options. */
function serveArgs(options: LaunchOptions): string[] {
  const args = ['serve', '--launcher'];
  if (options.dataDir !== undefined) args.push('--data-dir', options.dataDir);
  if (options.config !== undefined) args.push('--config', options.config);
  if (options.quic === false) args.push('--quic', 'off');
  if (options.unix !== undefined) args.push('--unix', options.unix);
  args.push(...(options.args ?? []));
  return args;
}

interface ReadyLine extends LaunchedServer {
  cert: string;
  key: string;
}

/** Checks the line's shape: every field of the contract, of its type. */
function parseLine(text: string): ReadyLine {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw launchError(`the launched server's first line is not JSON (is the binary \`keyward\` with --launcher?): ${preview(text)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw launchError(`the launched server's first line is not a JSON object: ${preview(text)}`);
  }
  const line = value as Record<string, unknown>;
  const str = (name: string): string => {
    const field = line[name];
    if (typeof field !== 'string' || field.length === 0) {
      throw launchError(`the launched server's line has no string "${name}" (is the binary a keyward with --launcher?)`);
    }
    return field;
  };
  const pid = line.pid;
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0) {
    throw launchError('the launched server\'s line has no process id "pid"');
  }
  const quic = line.quic;
  if (quic !== null && typeof quic !== 'string') throw launchError('the launched server\'s "quic" is neither an address nor null');
  const url = str('url');
  if (!/^https:\/\/127\.0\.0\.1:\d+\/v3\/owner$/.test(url)) throw launchError(`the launched server's "url" is not its loopback HTTPS URL: ${preview(url)}`);
  return { version: str('keyward'), pid, url, quic, ca: str('ca'), cert: str('cert'), key: str('key') };
}

/** At most 80 characters of what the server printed, never a key. */
function preview(text: string): string {
  const safe = text.includes('PRIVATE KEY') ? '(a line with a private key, not shown)' : text;
  return JSON.stringify(safe.length > 80 ? `${safe.slice(0, 80)}…` : safe);
}

/** Reads the child's first stdout line within `timeoutMs`; what it wrote to stderr explains a failure. */
function firstLine(child: ChildProcess, exited: Promise<LaunchedExit>, timeoutMs: number, stderrTail: () => string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    let done = false;
    const finish = (error: KeywardError | null, line?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      // Zero what was buffered: it held the client's private key.
      for (const chunk of chunks) chunk.fill(0);
      if (error) reject(error);
      else resolve(line ?? '');
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      const all = Buffer.concat(chunks, length);
      const end = all.indexOf(0x0a);
      if (end >= 0) {
        const line = all.subarray(0, end).toString('utf8');
        all.fill(0);
        finish(null, line);
      } else if (length > MAX_LINE_BYTES) {
        all.fill(0);
        finish(launchError(`the launched server printed more than ${MAX_LINE_BYTES} bytes without a line end`));
      } else {
        all.fill(0);
      }
    };
    const timer = setTimeout(() => {
      finish(new KeywardError('Timeout', `the launched server did not print its line within ${timeoutMs} ms${explain(stderrTail())}`, { code: CLIENT_CODES.local }));
    }, timeoutMs);
    child.stdout?.on('data', onData);
    child.once('error', (error) => finish(launchError(`cannot start ${child.spawnfile}: ${error.message} (give launch() the keyward binary's path as \`binary\`)`, error)));
    void exited.then(({ code, signal }) => {
      finish(launchError(`the launched server exited (${signal ?? `code ${code}`}) before it was ready${explain(stderrTail())}`));
    });
  });
}

/**
 * The most useful line of what the process wrote to stderr: the last one that starts with
 * `keyward:` or `error:` (its own reason, or clap's), else the last line; cleaned of control
 * characters and at most 500 characters.
 */
function explain(stderr: string): string {
  const lines = stderr
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
  const reason = [...lines].reverse().find((l) => /^(keyward|error):/i.test(l.replace(/\u001b\[[0-?]*[ -/]*[@-~]/g, '')));
  const line = reason ?? lines.at(-1);
  return line === undefined ? '' : `: ${cleanText(line, 500)}`;
}

/**
 * Starts `keyward serve --launcher` and connects to it as its owner client `launcher`. Rejects with
 * a KeywardError: InvalidArgument for an option of the wrong type or with a NUL character (before
 * anything starts); Launch or Timeout if the binary cannot be started, exits (the message carries
 * its reason from stderr), prints something other than its line, or is not ready within
 * `startTimeoutMs`; or the connection's error (Tls, Protocol, …). The process is killed then.
 */
export async function launch(options: LaunchOptions = {}): Promise<LaunchedKeyward> {
  checkOptions(options);
  const binary = options.binary ?? 'keyward';
  const log = options.log ?? 'inherit';
  // Its stderr is kept (the last 4 KiB) to explain a failed start, and passed on when asked.
  let child: ChildProcess;
  try {
    child = spawn(binary, serveArgs(options), { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
  } catch (error) {
    // Node refuses an argument before starting anything (checkOptions should have said so first).
    const code = typeof error === 'object' && error !== null && 'code' in error ? String(error.code) : '';
    const what = error instanceof Error ? error.message : String(error);
    if (code.startsWith('ERR_INVALID_ARG')) throw invalidArgument(what, error);
    throw launchError(`cannot start ${binary}: ${what}`, error);
  }
  const exited = new Promise<LaunchedExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4096);
    if (log === 'inherit') process.stderr.write(chunk);
  });
  // A server that stops reading its stdin is no reason to crash this process.
  child.stdin?.on('error', () => undefined);
  const fail = async (error: unknown): Promise<never> => {
    child.kill('SIGKILL');
    await exited;
    // A grandchild may still hold the pipes (a wrapper script's own child): let go of them.
    child.stdin?.destroy();
    child.stdout?.destroy();
    child.stderr?.destroy();
    throw error instanceof KeywardError ? error : launchError(`launch failed: ${String(error)}`, error);
  };
  let line: ReadyLine;
  try {
    line = parseLine(await firstLine(child, exited, options.startTimeoutMs ?? DEFAULT_LAUNCH_TIMEOUT_MS, () => stderr));
  } catch (error) {
    return fail(error);
  }
  // Anything after the line is not for us (the server prints nothing more); keep the pipe drained.
  child.stdout?.resume();
  const { cert, key, ...server } = line;
  if (server.pid !== child.pid) return fail(launchError(`the launched server says it is pid ${server.pid}, but the process started is ${child.pid}`));
  let base: Keyward;
  try {
    const session: SecureSessionOptions = {};
    if (options.random !== undefined) session.random = options.random;
    if (options.timeoutMs !== undefined) session.timeoutMs = options.timeoutMs;
    if (options.rekeyAfter !== undefined) session.rekeyAfter = options.rekeyAfter;
    if (options.reinitWhenGone !== undefined) session.reinitWhenGone = options.reinitWhenGone;
    if (options.namesSession !== undefined) session.namesSession = options.namesSession;
    const limits = options.maxAnswerBytes === undefined ? {} : { maxAnswerBytes: options.maxAnswerBytes };
    base = await connect({ ...session, ...limits, url: server.url, tls: { ca: server.ca, cert, key } });
  } catch (error) {
    return fail(error);
  }
  // Ready: the child no longer holds this process open (stop() holds it again while it waits).
  unrefChild(child);
  return new LaunchedKeyward(base, child, server, exited);
}
