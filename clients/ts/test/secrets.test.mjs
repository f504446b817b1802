// Key material the package copies is zeroed: the Buffer made from a string key once the TLS context
// holds it, and the Buffer readFile gave for a bundle's client.key (the bundle's key is a view of it,
// zeroed once the link is made). Spies on node:tls and node:fs/promises see what the package holds.

import './helpers/guard.mjs';

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import { readFileSync, rmSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import tls from 'node:tls';

import { connect, HttpLink, KeywardError } from '../dist/index.js';
import { keywardBinary, tempDir } from './helpers/server.mjs';

// Every options object handed to tls.createSecureContext, and every Buffer readFile returned.
const contexts = [];
const reads = [];
const realCreate = tls.createSecureContext;
const realReadFile = fsp.readFile;
tls.createSecureContext = (options) => {
  contexts.push(options);
  return realCreate(options);
};
fsp.readFile = async (...args) => {
  const out = await realReadFile(...args);
  if (typeof out !== 'string') reads.push({ path: String(args[0]), bytes: out });
  return out;
};
syncBuiltinESMExports();

let root;
let set;
before(() => {
  root = tempDir('keyward-ts-secrets-');
  set = join(root, 'set');
  const made = spawnSync(keywardBinary(), ['certs', 'init', '--dir', set], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
});
after(() => {
  tls.createSecureContext = realCreate;
  fsp.readFile = realReadFile;
  syncBuiltinESMExports();
  rmSync(root, { recursive: true, force: true });
});

const zero = (bytes) => bytes.every((b) => b === 0);
const pem = (file) => readFileSync(join(set, file), 'utf8');

test('a string key: the Buffer made of it is zero once the TLS context holds it', () => {
  contexts.length = 0;
  const link = new HttpLink('https://127.0.0.1:1/v3/owner', { ca: pem('ca.crt'), cert: pem('client.crt'), key: pem('client.key') });
  assert.equal(contexts.length, 1);
  const { key } = contexts[0];
  assert.ok(Buffer.isBuffer(key) && key.length > 100, 'the key was handed over as bytes');
  assert.ok(zero(key), 'the key bytes handed to createSecureContext were not zeroed');
  void link.close();
});

test('a Uint8Array key: the caller\'s bytes, the only copy, are zero', () => {
  contexts.length = 0;
  const bytes = new Uint8Array(readFileSync(join(set, 'client.key')));
  const link = new HttpLink('https://127.0.0.1:1/v3/owner', { ca: pem('ca.crt'), cert: pem('client.crt'), key: bytes });
  assert.ok(zero(bytes));
  assert.ok(zero(contexts[0].key));
  assert.equal(contexts[0].key.buffer, bytes.buffer, 'a view, not a copy');
  void link.close();
});

test('a bundle: the Buffer readFile gave for client.key is zero once the link holds the key', async () => {
  contexts.length = 0;
  reads.length = 0;
  await assert.rejects(connect({ bundle: set, url: 'https://127.0.0.1:1/v3/owner', timeoutMs: 2_000 }), (e) => e instanceof KeywardError);
  const keyReads = reads.filter((r) => r.path.endsWith('client.key'));
  assert.equal(keyReads.length, 1);
  assert.ok(keyReads[0].bytes.length > 100);
  assert.ok(zero(keyReads[0].bytes), "readFile's Buffer still holds the private key");
  assert.equal(contexts.length, 1);
  assert.ok(zero(contexts[0].key));
});
