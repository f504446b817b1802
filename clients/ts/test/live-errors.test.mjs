// Each class of error a live server answers, as the KeywardError a program switches on and the
// message a person reads. (Transport failures against fake servers: links.test.mjs, bundle.test.mjs.)

import './helpers/guard.mjs';

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { connect, KeywardError } from '../dist/index.js';
import { startServer, tempDir } from './helpers/server.mjs';

let server;
let owner;
let reader;

async function refused(promise, { variant, code, message }) {
  const error = await promise.then(
    () => assert.fail(`expected ${variant}`),
    (e) => e,
  );
  assert.ok(error instanceof KeywardError, String(error));
  assert.equal(error.variant, variant, error.message);
  if (code !== undefined) assert.equal(error.code, code, error.message);
  if (message) assert.match(error.message, message);
  assert.doesNotMatch(error.message, /hunter2|s3cret/, 'no secret in a message');
  return error;
}

before(async () => {
  server = await startServer();
  owner = await connect({ bundle: server.tlsDir, url: server.url });
  await owner.createWallet({ name: 'w', mnemonic: null, mnemonic_length: 16, password: 'hunter2' });
  const dir = join(tempDir('keyward-ts-errors-'), 'reader');
  const made = server.cli(['clients', '--url', server.url, 'add', 'looker', '--role', 'reader', '--out', dir]);
  assert.equal(made.status, 0, made.stderr);
  reader = await connect({ bundle: dir, url: server.url });
});

after(async () => {
  await reader?.close();
  await owner?.close();
  await server?.dispose();
});

test('Forbidden: a reader asking for an owner method, with the fix named', async () => {
  const error = await refused(reader.getMnemonic({ name: 'w', password: 'hunter2' }), { variant: 'Forbidden', code: -32099, message: /needs the owner role/ });
  assert.match(error.message, /keyward clients role/);
  await refused(reader.createAccountPath({ token: '00'.repeat(32), label: 'x' }), { variant: 'Forbidden', message: /signer/ });
});

test('a wrong password, and a wallet that does not exist, say the same thing', async () => {
  await refused(owner.openWallet({ name: 'w', password: 's3cret' }), { variant: 'Lifecycle', code: -32099, message: /the wallet does not exist or the password is wrong/ });
  await refused(owner.openWallet({ name: 'nobody', password: 's3cret' }), { variant: 'Lifecycle', message: /the wallet does not exist or the password is wrong/ });
});

test('InvalidKeychainMask: a token that is not one, or no longer one', async () => {
  await refused(owner.accounts({ token: '11'.repeat(32) }), { variant: 'InvalidKeychainMask', code: -32099, message: /open the wallet again/ });
  const token = await owner.openWallet({ name: 'w', password: 'hunter2' });
  await owner.openWallet({ name: 'w', password: 'hunter2' }); // a new token replaces it
  await refused(owner.accounts({ token }), { variant: 'InvalidKeychainMask' });
  // Tokens belong to the client that opened the wallet.
  const mine = await owner.openWallet({ name: 'w', password: 'hunter2' });
  await refused(reader.accounts({ token: mine }), { variant: 'InvalidKeychainMask' });
  await owner.closeWallet({ name: 'w' });
  await refused(owner.accounts({ token: mine }), { variant: 'Lifecycle', message: /not been opened.*open it with openWallet/ });
});

test('InvalidParams, MethodNotFound (via call()), ArgumentError, WalletSeedExists', async () => {
  await refused(owner.call('accounts', {}), { variant: 'InvalidParams', code: -32602, message: /token/ });
  await refused(owner.call('accounts', { token: 'x', extra: 1 }), { variant: 'InvalidParams', code: -32602 });
  await refused(owner.call('no_such_method', {}), { variant: 'MethodNotFound', code: -32601 });
  await refused(owner.createWallet({ name: '../up', mnemonic: null, mnemonic_length: 16, password: 'p' }), { variant: 'ArgumentError', code: -32099 });
  await refused(owner.createWallet({ name: 'x', mnemonic: null, mnemonic_length: 10, password: 'p' }), { variant: 'ArgumentError', message: /mnemonic_length/ });
  await refused(owner.createWallet({ name: 'w', mnemonic: null, mnemonic_length: 16, password: 'p' }), { variant: 'WalletSeedExists' });
});

test('Replay: the same envelope sent twice is refused by the server', async () => {
  const { body, pending } = await owner.session.session.seal('list_wallets', {});
  const first = await owner.session.send(body);
  assert.deepEqual((await owner.session.session.open(pending, first)).map((w) => w.name), ['w']);
  const again = await owner.session.send(body);
  await refused(owner.session.session.open(pending, again), { variant: 'Replay', code: -32002, message: /replay/ });
  // The session goes on.
  assert.ok(Array.isArray(await owner.listWallets()));
});

test('an envelope the server cannot authenticate: Envelope (−32002), and the session goes on', async () => {
  const { body, pending } = await owner.session.session.seal('list_wallets', {});
  const tampered = JSON.parse(new TextDecoder().decode(body));
  const first = tampered.params.body_enc[0];
  tampered.params.body_enc = (first === 'A' ? 'B' : 'A') + tampered.params.body_enc.slice(1);
  const answer = await owner.session.send(new TextEncoder().encode(JSON.stringify(tampered)));
  await refused(owner.session.session.open(pending, answer), { variant: 'Envelope', code: -32002 });
  assert.ok(Array.isArray(await owner.listWallets()));
});

test('a plaintext body the server cannot parse: ParseError, mapped like any server error', async () => {
  const { pending } = await owner.session.session.seal('list_wallets', {});
  const answer = await owner.session.send(new TextEncoder().encode('{not json'));
  await refused(owner.session.session.open(pending, answer), { variant: 'ParseError', code: -32700 });
});
