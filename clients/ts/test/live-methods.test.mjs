// Every method of the spec against a live `keyward serve`, each called by a client whose role is the
// least one it needs (reader, signer, owner bundles made with `keyward clients add --out`), over
// HTTPS with mTLS; then the Unix socket and loopback plain HTTP.

import './helpers/guard.mjs';

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { connect, KeywardError, METHODS } from '../dist/index.js';
import { startServer, tempDir } from './helpers/server.mjs';

const grin = JSON.parse(readFileSync(fileURLToPath(new URL('../../../spec/vectors/grin-v3.json', import.meta.url)), 'utf8'));

let server;
let dirs;
const open = [];
const called = new Set();

/** A bundle for a new client with `role`, made by the CLI against the running server. */
function addClient(name, role) {
  const out = join(dirs, name);
  const made = server.cli(['clients', '--url', server.url, 'add', name, '--role', role, '--out', out]);
  assert.equal(made.status, 0, made.stderr);
  return out;
}

async function client(options) {
  const kw = await connect(options);
  open.push(kw);
  // Record which wire methods the suite reaches (checked against METHODS at the end).
  const call = kw.call.bind(kw);
  kw.call = (method, params) => {
    called.add(method);
    return call(method, params);
  };
  return kw;
}

before(async () => {
  server = await startServer();
  dirs = tempDir('keyward-ts-bundles-');
});

after(async () => {
  for (const kw of open) await kw.close();
  await server?.dispose();
});

test('every method, each with the least role it needs', async () => {
  const owner = await client({ bundle: server.tlsDir, url: server.url });
  const signer = await client({ bundle: addClient('signer-1', 'signer'), url: server.url });
  // The reader's bundle gets a keyward.toml as `keyward pair` writes it: the URL comes from there.
  const readerDir = addClient('reader-1', 'reader');
  writeFileSync(
    join(readerDir, 'keyward.toml'),
    `# A keyward client bundle\nname = "reader-1"\nrole = "reader"\nurl = "${server.url}"\nquic = "${server.quic}"\n`,
  );
  const reader = await client({ bundle: readerDir });
  assert.equal(reader.info.url, server.url);
  assert.equal(reader.info.client, 'reader-1');
  assert.equal(reader.info.role, 'reader');

  // Lifecycle (owner).
  assert.equal(await owner.createConfig({ chain_type: 'Mainnet', wallet_config: null, logging_config: null, tor_config: null }), null);
  const password = new TextEncoder().encode('correct horse');
  assert.equal(await owner.createWallet({ name: 'main', mnemonic: null, mnemonic_length: 16, password }), null);
  assert.deepEqual(password, new TextEncoder().encode('correct horse'), 'the caller zeroes its own bytes');
  assert.equal(await owner.importGrinWallet({ name: 'grin', wallet_seed: grin.grin_wallet_seed[1].file, password: grin.grin_wallet_seed[1].password }), null);
  assert.equal(await owner.getMnemonic({ name: 'grin', password: grin.grin_wallet_seed[1].password }), grin.grin_wallet_seed[1].mnemonic);
  const words = await owner.getMnemonic({ name: 'main', password: 'correct horse' });
  assert.equal(words.split(' ').length, 12);

  // Reader: list, open, accounts, keys, verify, close.
  const wallets = await reader.listWallets();
  assert.deepEqual(wallets.map((w) => w.name), ['grin', 'main']);
  assert.match(await reader.getTopLevelDirectory(), /\/kw/);
  const readerToken = await reader.openWallet({ name: 'main', password: 'correct horse' });
  assert.match(readerToken, /^[0-9a-f]{64}$/);
  assert.deepEqual(await reader.accounts({ token: readerToken }), [{ label: 'default', path: '0200000000000000000000000000000000' }]);
  const pub = await reader.getPublicKey({ token: readerToken, path: "m/44'/0'/0'/0/0" });
  assert.match(pub, /^0[23][0-9a-f]{64}$/);

  // Signer: its own opening, accounts and signatures.
  const token = await signer.openWallet({ name: 'main', password: 'correct horse' });
  assert.equal(await signer.createAccountPath({ token, label: 'savings' }), '0200000001000000000000000000000000');
  assert.equal(await signer.setActiveAccount({ token, label: 'savings' }), null);
  const signed = await signer.signMessage({ token, path: "m/44'/0'/0'/0/0", message: 'hello' });
  assert.equal(signed.public_key, pub);
  assert.match(signed.signature, /^[0-9a-f]{128}$/);
  assert.equal(await reader.verifyMessage({ public_key: pub, message: 'hello', signature: signed.signature }), true);
  assert.equal(await reader.verifyMessage({ public_key: pub, message: 'hullo', signature: signed.signature }), false);
  assert.equal(await signer.closeWallet({ name: 'main' }), null);
  assert.equal(await reader.closeWallet({ name: 'main' }), null);

  // Owner: password, directory, clients, audit, delete.
  assert.equal(await owner.changePassword({ name: 'main', old: 'correct horse', new: new TextEncoder().encode('battery staple') }), null);
  assert.equal(await owner.setTopLevelDirectory({ dir: 'sub' }), null);
  assert.match(await owner.getTopLevelDirectory(), /\/sub$/);
  assert.deepEqual(await owner.listWallets(), []);
  assert.equal(await owner.setTopLevelDirectory({ dir: '.' }), null);
  const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' });
  const added = await owner.addClient({ name: 'by-key', role: 'reader', public_key: spki, uid: null });
  assert.equal(added.name, 'by-key');
  assert.match(String(added.certificate), /BEGIN CERTIFICATE/);
  assert.deepEqual(await owner.addClient({ name: 'by-uid', role: 'signer', public_key: null, uid: 424242 }), { name: 'by-uid', role: 'signer', uid: 424242 });
  const ticket = await owner.pairClient({ name: 'phone', role: 'reader', ttl_secs: 60 });
  assert.equal(ticket.name, 'phone');
  assert.equal(typeof ticket.code, 'string');
  assert.equal(await owner.setClientRole({ name: 'by-key', role: 'signer' }), null);
  assert.equal(await owner.revokeClient({ name: 'by-uid' }), null);
  const clients = await owner.listClients();
  const byName = Object.fromEntries(clients.map((c) => [c.name, c]));
  assert.equal(byName['by-key'].role, 'signer');
  assert.notEqual(byName['by-uid'].revoked_unix_ms, null);
  assert.equal(byName['reader-1'].role, 'reader');
  const page = await owner.auditLog({ after: null, limit: 50 });
  assert.ok(Array.isArray(page.records) && page.records.length > 0);
  assert.equal(await owner.deleteWallet({ name: 'main', password: 'battery staple' }), null);
  assert.deepEqual((await owner.listWallets()).map((w) => w.name), ['grin']);

  // Every generated method was called at least once.
  assert.deepEqual(METHODS.map((m) => m.name).filter((m) => !called.has(m)), []);
});

test('call() reaches any method by its wire name', async () => {
  const owner = await client({ bundle: server.tlsDir, url: server.url });
  assert.ok(Array.isArray(await owner.call('list_wallets', {})));
  assert.ok(Array.isArray(await owner.call('list_wallets')));
  // Positional params, as grin's dispatcher takes them.
  const generator = '0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798';
  assert.equal(await owner.call('verify_message', [generator, 'm', '00'.repeat(64)]), false);
});

test('the Unix socket: connect({ unix })', async () => {
  const kw = await client({ unix: server.unix });
  assert.deepEqual(kw.info, { transport: 'unix', path: server.unix, sessionId: null });
  assert.deepEqual((await kw.listWallets()).map((w) => w.name), ['grin']);
  const token = await kw.openWallet({ name: 'grin', password: 'testpass' });
  assert.equal((await kw.accounts({ token })).length, 1);
  assert.equal(await kw.closeWallet({ name: 'grin' }), null);
});

test('loopback plain HTTP: connect({ url: "http://…" })', async () => {
  const kw = await client({ url: server.httpUrl });
  assert.equal(kw.info.transport, 'http');
  assert.match(kw.info.sessionId, /^[0-9a-f]{32}$/);
  assert.deepEqual((await kw.listWallets()).map((w) => w.name), ['grin']);
});

test('a closed connection refuses further calls with variant Closed', async () => {
  const kw = await connect({ url: server.httpUrl });
  await kw.close();
  await assert.rejects(kw.listWallets(), (e) => e instanceof KeywardError && e.variant === 'Closed');
  await kw.close();
});

test('an idle connection does not keep the process alive (HTTP, Unix)', () => {
  const index = new URL('../dist/index.js', import.meta.url).href;
  const script = `import { connect } from ${JSON.stringify(index)};
const u = await connect({ unix: ${JSON.stringify(server.unix)} });
const h = await connect({ url: ${JSON.stringify(server.httpUrl)} });
console.log((await u.listWallets()).length + (await h.listWallets()).length);`;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
  assert.equal(run.signal, null, 'the process had to be killed: a connection kept it alive');
  assert.equal(run.status, 0, run.stderr);
});
