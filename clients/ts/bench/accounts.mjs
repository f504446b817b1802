// The TypeScript client's calls/s and latency for `accounts` over HTTPS with mTLS, next to the Rust
// client (`keyward bench`) against the same server in the same run (BENCHMARKS.md).
//
//   npm run build && node bench/accounts.mjs [--binary PATH] [--seconds 2] [--rounds 3] [--concurrency 1,16]
//
// It starts `keyward serve` (the binary given, else KEYWARD_BIN, else ../../target/release/keyward) on a
// temporary data directory with the default config (Argon2id m=64 MiB) but for the session limits
// `keyward bench` also raises. Each round measures, in turn: the TypeScript client at each concurrency
// (that many connections, each its own keep-alive HTTPS connection and secure session, all in this
// one Node process), then `keyward bench --url … --calls accounts --transports https` (the Rust
// client, its own process) at the same concurrencies. Medians over the rounds are printed last, as a
// Markdown table, and every figure as JSON to --json FILE if given.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { connect } from '../dist/index.js';
import { callLoop } from './loop.mjs';

const here = dirname(fileURLToPath(import.meta.url));

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && process.argv[at + 1] !== undefined ? process.argv[at + 1] : fallback;
}

const binary = option('binary', process.env.KEYWARD_BIN ?? resolve(here, '../../../target/release/keyward'));
const seconds = Number(option('seconds', '2'));
const rounds = Number(option('rounds', '3'));
const levels = option('concurrency', '1,16').split(',').map(Number);
const jsonOut = option('json', null);

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return NaN;
  return n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

async function startServer(root) {
  const config = join(root, 'bench.toml');
  writeFileSync(config, '[sessions]\nmax = 20000\nmax_requests = 1000000000\n');
  const ready = join(root, 'ready.json');
  const child = spawn(
    binary,
    ['serve', '--data-dir', join(root, 'kw'), '--config', config, '--https', '127.0.0.1:0', '--quic', 'off', '--pairing', 'off', '--ready-file', ready],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } },
  );
  const deadline = Date.now() + 30_000;
  while (!existsSync(ready)) {
    if (Date.now() > deadline) throw new Error('keyward serve did not start');
    await sleep(20);
  }
  const addrs = JSON.parse(readFileSync(ready, 'utf8'));
  return { child, url: `https://${addrs.https}/v3/owner`, tlsDir: join(root, 'kw', 'tls') };
}

/** `concurrency` clients calling accounts for `seconds`: calls/s and p50 µs. */
async function measureTs(server, token, concurrency) {
  const clients = await Promise.all(Array.from({ length: concurrency }, () => connect({ bundle: server.tlsDir, url: server.url })));
  const run = (ms) => callLoop(clients, (kw) => kw.accounts({ token }), ms);
  // Warm up (connections, JIT) for a quarter of the time, not recorded.
  await run(seconds * 250);
  const t0 = performance.now();
  // calls/s and p50 count the calls that succeeded; failures are counted as errors only.
  const { latencies, errors } = await run(seconds * 1000);
  const elapsed = (performance.now() - t0) / 1000;
  await Promise.all(clients.map((kw) => kw.close()));
  return { calls_per_s: latencies.length / elapsed, p50_us: median(latencies) * 1000, calls: latencies.length, errors };
}

/**
 * Node's own HTTPS floor: `concurrency` keep-alive connections POSTing a plaintext request of the
 * sealed call's size that the server refuses at once (an unknown method: no session, no crypto on
 * either side). What a Node client cannot go below on this server.
 */
async function measureNodeFloor(server, concurrency) {
  const credentials = { ca: readFileSync(join(server.tlsDir, 'ca.crt')), cert: readFileSync(join(server.tlsDir, 'client.crt')), key: readFileSync(join(server.tlsDir, 'client.key')) };
  const url = new URL(server.url);
  const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'no_such_method', params: { pad: 'x'.repeat(230) } }));
  const agents = Array.from({ length: concurrency }, () => new https.Agent({ keepAlive: true, noDelay: true, maxSockets: 1, ...credentials }));
  const post = (agent) =>
    new Promise((resolve, reject) => {
      const request = https.request(
        { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (response) => {
          response.on('data', () => {});
          response.on('end', resolve);
        },
      );
      request.on('error', reject);
      request.end(body);
    });
  const run = (ms) => callLoop(agents, post, ms);
  await run(seconds * 250);
  const t0 = performance.now();
  const { latencies, errors } = await run(seconds * 1000);
  const elapsed = (performance.now() - t0) / 1000;
  for (const agent of agents) agent.destroy();
  return { calls_per_s: latencies.length / elapsed, p50_us: median(latencies) * 1000, calls: latencies.length, errors };
}

/** The Rust client's figures for accounts over HTTPS, from `keyward bench --json`. */
function measureRust(server, root) {
  const out = join(root, `rust-${Date.now()}.json`);
  const ran = spawnSync(
    binary,
    ['bench', '--url', server.url, '--tls-dir', server.tlsDir, '--pid', String(server.child.pid), '--transports', 'https', '--calls', 'accounts', '--concurrency', levels.join(','), '--seconds', String(seconds), '--json', out],
    { encoding: 'utf8', env: { ...process.env, RUST_LOG: 'warn' }, maxBuffer: 64 * 1024 * 1024 },
  );
  if (ran.status !== 0) throw new Error(`keyward bench failed: ${ran.stderr}`);
  const report = JSON.parse(readFileSync(out, 'utf8'));
  const cells = {};
  for (const cell of report.calls) {
    if (cell.target === 'accounts') cells[cell.concurrency] = { calls_per_s: cell.calls_per_s, p50_us: cell.latency.p50_us, errors: cell.errors };
  }
  return cells;
}

const root = mkdtempSync(join(tmpdir(), 'keyward-ts-bench-'));
const server = await startServer(root);
try {
  const owner = await connect({ bundle: server.tlsDir, url: server.url });
  await owner.createWallet({ name: 'tsbench', mnemonic: null, mnemonic_length: 16, password: 'tsbench' });
  const token = await owner.openWallet({ name: 'tsbench', password: 'tsbench' });
  const results = [];
  for (let round = 1; round <= rounds; round += 1) {
    for (const c of levels) {
      const ts = await measureTs(server, token, c);
      results.push({ round, client: 'typescript', concurrency: c, ...ts });
      process.stderr.write(`round ${round} TypeScript c=${c}: ${ts.calls_per_s.toFixed(0)} calls/s, p50 ${ts.p50_us.toFixed(1)} µs, ${ts.errors} errors\n`);
      const floor = await measureNodeFloor(server, c);
      // A refused request is what the floor sends: its answers are not errors.
      results.push({ round, client: 'node-floor', concurrency: c, ...floor });
      process.stderr.write(`round ${round} Node HTTPS floor c=${c}: ${floor.calls_per_s.toFixed(0)} calls/s, p50 ${floor.p50_us.toFixed(1)} µs\n`);
    }
    const rust = measureRust(server, root);
    for (const c of levels) {
      const cell = rust[c];
      results.push({ round, client: 'rust', concurrency: c, ...cell });
      process.stderr.write(`round ${round} Rust c=${c}: ${cell.calls_per_s.toFixed(0)} calls/s, p50 ${cell.p50_us.toFixed(1)} µs, ${cell.errors} errors\n`);
    }
  }
  await owner.closeWallet({ name: 'tsbench' });
  await owner.close();
  const names = { typescript: 'TypeScript (@keyward/client)', rust: 'Rust (keyward bench)', 'node-floor': 'Node HTTPS floor (refused plaintext POST)' };
  console.log('| client | conc | calls/s (median) | p50 µs (median) | calls/s / Rust (median of per-round ratios) | errors |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const c of levels) {
    for (const client of ['typescript', 'node-floor', 'rust']) {
      const mine = results.filter((r) => r.client === client && r.concurrency === c);
      const ratios = [];
      for (let round = 1; round <= rounds; round += 1) {
        const t = results.find((r) => r.round === round && r.client === client && r.concurrency === c);
        const r = results.find((x) => x.round === round && x.client === 'rust' && x.concurrency === c);
        ratios.push(t.calls_per_s / r.calls_per_s);
      }
      const ratio = client === 'rust' ? '-' : `${median(ratios).toFixed(2)}x`;
      const errors = mine.reduce((sum, r) => sum + r.errors, 0);
      console.log(`| ${names[client]} | ${c} | ${median(mine.map((r) => r.calls_per_s)).toFixed(0)} | ${median(mine.map((r) => r.p50_us)).toFixed(1)} | ${ratio} | ${errors} |`);
    }
  }
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ seconds, rounds, levels, results }, null, 2));
} finally {
  server.child.kill('SIGTERM');
  await new Promise((r) => server.child.once('exit', r));
  rmSync(root, { recursive: true, force: true });
}
