// Bundles on disk: a world-readable key refused with the chmod fix named, partial and unreadable
// bundles named by their missing file, keyward.toml read as `keyward pair` writes it, a server's
// tls/ (symlinks) read as a bundle; and HTTPS against a TLS server that is silent or from another CA.

import './helpers/guard.mjs';

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { join } from 'node:path';

import { connect, DEFAULT_URL, KeywardError, parseBundleToml, readBundle } from '../dist/index.js';
import { keywardBinary, tempDir } from './helpers/server.mjs';

let root;
let setA; // a certificate set, as `keyward certs init` writes it (ca.crt etc. are symlinks into sets/N/)
let setB; // another CA's set

function certsInit(dir) {
  const made = spawnSync(keywardBinary(), ['certs', 'init', '--dir', dir], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  return dir;
}

/** A bundle dir with copies of a set's client files (as `keyward clients add --out` writes them). */
function bundleFrom(set, name, { keyMode = 0o600, toml = null, omit = null } = {}) {
  const dir = join(root, name);
  mkdirSync(dir, { mode: 0o700 });
  for (const file of ['ca.crt', 'client.crt', 'client.key']) {
    if (file === omit) continue;
    copyFileSync(join(set, file), join(dir, file));
  }
  if (omit !== 'client.key') chmodSync(join(dir, 'client.key'), keyMode);
  if (toml !== null) writeFileSync(join(dir, 'keyward.toml'), toml);
  return dir;
}

async function refused(promise, variant, message) {
  const error = await promise.then(
    () => assert.fail('expected a KeywardError'),
    (e) => e,
  );
  assert.ok(error instanceof KeywardError, String(error));
  assert.equal(error.variant, variant, error.message);
  if (message) assert.match(error.message, message);
  return error;
}

const servers = [];
/** Tracks a fake server's sockets so that after() can end them (close() waits for every one). */
function track(server) {
  const sockets = new Set();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  servers.push({ server, sockets });
  return server;
}
before(() => {
  root = tempDir('keyward-ts-bundle-');
  setA = certsInit(join(root, 'set-a'));
  setB = certsInit(join(root, 'set-b'));
});
after(async () => {
  for (const { server, sockets } of servers) {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  rmSync(root, { recursive: true, force: true });
});

test('a server tls/ directory (symlinks, no keyward.toml) reads as a bundle with the default URL', async () => {
  assert.ok(lstatSync(join(setA, 'client.key')).isSymbolicLink(), 'certs init writes symlinks');
  const bundle = await readBundle(setA);
  assert.equal(bundle.url, DEFAULT_URL);
  assert.equal(bundle.name, undefined);
  assert.match(new TextDecoder().decode(bundle.cert), /BEGIN CERTIFICATE/);
  assert.match(new TextDecoder().decode(bundle.key), /PRIVATE KEY/);
});

test('keyward.toml as the Rust side writes it: name, role, url, quic', async () => {
  const toml = '# A keyward client bundle: `keyward call --tls-dir <this directory> METHOD` uses it.\n# name and role are as registered when it was made; the server\'s registry is what counts.\nname = "laptop"\nrole = "signer"\nurl = "https://127.0.0.1:4567/v3/owner"\nquic = "127.0.0.1:4567"\n';
  const bundle = await readBundle(bundleFrom(setA, 'with-toml', { toml }));
  assert.deepEqual([bundle.name, bundle.role, bundle.url, bundle.quic], ['laptop', 'signer', 'https://127.0.0.1:4567/v3/owner', '127.0.0.1:4567']);
  assert.deepEqual(parseBundleToml("name = 'lit' # c\nurl = \"a\\u00e9\\\"\"\n"), { name: 'lit', url: 'aé"' });
  for (const bad of ['name = x', '[section]', 'name = "open', 'url = "\\q"']) assert.throws(() => parseBundleToml(bad));
  await refused(readBundle(bundleFrom(setA, 'bad-toml', { toml: 'name = [1]\n' })), 'Bundle', /keyward\.toml/);
});

test('a client.key that others can read is refused, naming chmod 600', async () => {
  for (const mode of [0o644, 0o640, 0o604, 0o660]) {
    const dir = bundleFrom(setA, `open-key-${mode.toString(8)}`, { keyMode: mode });
    const error = await refused(connect({ bundle: dir, url: 'https://127.0.0.1:1/v3/owner' }), 'Bundle', /chmod 600/);
    assert.ok(error.message.includes(join(dir, 'client.key')), error.message);
    assert.ok(!/PRIVATE KEY/.test(error.message));
  }
});

test('a partial or missing bundle is a Bundle error naming the missing file', async () => {
  for (const file of ['ca.crt', 'client.crt', 'client.key']) {
    const dir = bundleFrom(setA, `without-${file}`, { omit: file });
    await refused(connect({ bundle: dir }), 'Bundle', new RegExp(`${file.replace('.', '\\.')} is missing`));
  }
  await refused(connect({ bundle: join(root, 'no-such-dir') }), 'Bundle', /does not exist/);
  const garbage = bundleFrom(setA, 'garbage-key');
  writeFileSync(join(garbage, 'client.key'), 'not a key');
  await refused(connect({ bundle: garbage, url: 'https://127.0.0.1:1/v3/owner' }), 'Bundle', /could not be loaded/);
});

test('an unreadable bundle file is a Bundle error', async () => {
  const dir = bundleFrom(setA, 'unreadable');
  if (process.getuid?.() === 0) {
    // Root reads a 0000 file: make it unreadable as a file another way (a directory in its place).
    rmSync(join(dir, 'client.crt'));
    mkdirSync(join(dir, 'client.crt'));
  } else {
    chmodSync(join(dir, 'client.crt'), 0o000);
  }
  await refused(connect({ bundle: dir }), 'Bundle', /client\.crt/);
});

test('HTTPS to a silent TCP server: Timeout, never a hang', async () => {
  const silent = track(createNetServer(() => {}));
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const url = `https://127.0.0.1:${silent.address().port}/v3/owner`;
  const started = Date.now();
  await refused(connect({ bundle: setA, url, timeoutMs: 300 }), 'Timeout', /300 ms/);
  assert.ok(Date.now() - started < 3_000);
});

test('HTTPS to a server whose certificate another CA signed: Tls, naming the other server', async () => {
  const tlsServer = track(createTlsServer({ key: readFileSync(join(setB, 'server.key')), cert: readFileSync(join(setB, 'server.crt')) }, (s) => s.end()));
  tlsServer.on('tlsClientError', () => {});
  await new Promise((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
  const url = `https://127.0.0.1:${tlsServer.address().port}/v3/owner`;
  await refused(connect({ bundle: setA, url }), 'Tls', /another server/);
});

test('HTTPS to a server that refuses our certificate (another CA): Tls, saying so', async () => {
  const tlsServer = track(createTlsServer(
    {
      key: readFileSync(join(setB, 'server.key')),
      cert: readFileSync(join(setB, 'server.crt')),
      ca: readFileSync(join(setB, 'ca.crt')),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    },
    (s) => s.end(),
  ));
  tlsServer.on('tlsClientError', () => {});
  await new Promise((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
  // A bundle that trusts B's CA but presents A's client certificate.
  const mixed = bundleFrom(setA, 'mixed');
  copyFileSync(join(setB, 'ca.crt'), join(mixed, 'ca.crt'));
  const url = `https://127.0.0.1:${tlsServer.address().port}/v3/owner`;
  const error = await refused(connect({ bundle: mixed, url }), 'Tls');
  assert.match(error.message, /refused this client's certificate|closed the connection/);
});
