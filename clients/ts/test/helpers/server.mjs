// A live `keyward serve` for the suites: its own data directory in the temp dir, every listener on an
// ephemeral loopback port (HTTPS, QUIC, plain HTTP, pairing) and a Unix socket, fast KDF parameters.
// The binary is KEYWARD_BIN (the Rust test that runs this suite sets it), else the workspace's
// target/debug/keyward.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = dirname(fileURLToPath(import.meta.url));

/** The keyward binary under test. */
export function keywardBinary() {
  const chosen = process.env.KEYWARD_BIN;
  if (chosen) return chosen;
  const built = resolve(here, '../../../../target/debug/keyward');
  if (existsSync(built)) return built;
  throw new Error('no keyward binary: set KEYWARD_BIN or run `cargo build -p keyward` first');
}

/** Every directory tempDir made in this process: removed when it exits, whatever the test did. */
const made = new Set();
process.on('exit', () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** A fresh temporary directory, removed at the latest when this test process exits. */
export function tempDir(prefix = 'keyward-ts-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.add(dir);
  return dir;
}

/** The config every test server gets: test-speed Argon2id, no unlock waits for the first few failures. */
export const TEST_CONFIG = `
[kdf]
m_cost_kib = 64
t_cost = 1
p_cost = 1
`;

/**
 * Starts `keyward serve` on `root/kw` (a second start on the same root reuses its data) and waits for
 * its ready file. Returns its addresses, its directories and stop(). `listen` may fix any of the
 * `https`, `quic`, `httpInsecure` and `pairing` addresses (default: an ephemeral loopback port each).
 */
export async function startServer({ root = tempDir(), extraArgs = [], config = TEST_CONFIG, timeoutMs = 20_000, listen = {} } = {}) {
  const dataDir = join(root, 'kw');
  const ready = join(root, 'ready.json');
  rmSync(ready, { force: true });
  const configFile = join(root, 'keyward-test.toml');
  writeFileSync(configFile, config);
  const unix = join(root, 'run', 'keyward.sock');
  const args = [
    'serve',
    '--data-dir', dataDir,
    '--config', configFile,
    // `listen` fixes an address (e.g. the HTTPS port of an earlier run, to restart on it).
    '--https', listen.https ?? '127.0.0.1:0',
    '--quic', listen.quic ?? '127.0.0.1:0',
    '--http-insecure', listen.httpInsecure ?? '127.0.0.1:0',
    '--pairing', listen.pairing ?? '127.0.0.1:0',
    '--unix', unix,
    '--ready-file', ready,
    ...extraArgs,
  ];
  const child = spawn(keywardBinary(), args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(ready)) {
    if (exited) throw new Error(`keyward serve exited (${JSON.stringify(exited)}) before it was ready: ${stderr}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`keyward serve was not ready within ${timeoutMs} ms: ${stderr}`);
    }
    await sleep(20);
  }
  const addrs = JSON.parse(readFileSync(ready, 'utf8'));
  const server = {
    root,
    dataDir,
    tlsDir: join(dataDir, 'tls'),
    pid: child.pid,
    child,
    url: `https://${addrs.https}/v3/owner`,
    httpUrl: `http://${addrs.http_insecure}/v3/owner`,
    quic: addrs.quic,
    unix: addrs.unix,
    stderr: () => stderr,
    /** Runs `keyward ARGS` against this server's data directory; returns { status, stdout, stderr }. */
    cli(cliArgs, { input } = {}) {
      const out = spawnSync(keywardBinary(), cliArgs, {
        input,
        encoding: 'utf8',
        env: { ...process.env, KEYWARD_DATA_DIR: dataDir, RUST_LOG: 'warn' },
        timeout: 60_000,
      });
      return { status: out.status, stdout: out.stdout, stderr: out.stderr };
    },
    /** SIGTERM, then wait for the exit (SIGKILL after 10 s). */
    async stop() {
      if (exited) return exited;
      const done = new Promise((resolveExit) => child.once('exit', (code, signal) => resolveExit({ code, signal })));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const result = await done;
      clearTimeout(timer);
      return result;
    },
    /** stop() and remove the whole root. */
    async dispose() {
      await server.stop();
      rmSync(root, { recursive: true, force: true });
    },
  };
  return server;
}
