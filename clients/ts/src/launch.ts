// launch(): a front end starts its own back end, `keyward serve --launcher`, and connects to it.
//
// The launched server makes a CA, a server certificate and one client certificate in memory for
// that run only and prints exactly one JSON line on its standard output:
//   {"keyward":VERSION,"pid":N,"url":"https://127.0.0.1:PORT/v3/owner","quic":"127.0.0.1:PORT"|null,
//    "ca":PEM,"cert":PEM,"key":PEM}
// launch() reads that line from the pipe (the credentials never touch a disk), connects over HTTPS
// with mTLS as the server's owner client `launcher`, and keeps the server's standard input open: the
// server exits when it closes (stop(), or this process ending in any way) or when this process dies
// (PR_SET_PDEATHSIG on Linux).

import { spawn, type ChildProcess } from 'node:child_process';

import { Keyward } from './client.js';
import { connect } from './connect.js';
import { CLIENT_CODES, KeywardError } from './errors.js';
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
   * Closes the connection, then the server's standard input (the server closes every wallet, wipes
   * its vault and exits), and waits for it to exit; after `timeoutMs` (default 10 s) it is killed.
   */
  async stop(timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<LaunchedExit> {
    await this.close().catch(() => undefined);
    return stopChild(this.child, this.exited, timeoutMs);
  }
}

function launchError(message: string, cause?: unknown): KeywardError {
  return new KeywardError('Launch', message, { code: CLIENT_CODES.local, cause });
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

function explain(stderr: string): string {
  const last = stderr.trim().split('\n').filter((l) => l.trim() !== '').pop();
  return last === undefined ? '' : `: ${last.trim()}`;
}

/**
 * Starts `keyward serve --launcher` and connects to it as its owner client `launcher`. Rejects with
 * a KeywardError (variant Launch or Timeout) if the binary cannot be started, exits, prints something
 * other than its line, or is not ready within `startTimeoutMs`; the process is killed then.
 */
export async function launch(options: LaunchOptions = {}): Promise<LaunchedKeyward> {
  const binary = options.binary ?? 'keyward';
  const log = options.log ?? 'inherit';
  // Its stderr is kept (the last 4 KiB) to explain a failed start, and passed on when asked.
  const child = spawn(binary, serveArgs(options), { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
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
    base = await connect({ ...session, url: server.url, tls: { ca: server.ca, cert, key } });
  } catch (error) {
    return fail(error);
  }
  return new LaunchedKeyward(base, child, server, exited);
}
