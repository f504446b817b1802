// The mapping from the server's errors to KeywardError: a variant per code and per −32099 variant,
// messages that name the fix, and nothing of a secret.

import './helpers/guard.mjs';

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { KeywardError, CLIENT_CODES, fromServerError } from '../dist/index.js';

test('codes map to variants', () => {
  const table = [
    [-32001, "Encryption must be enabled. Please call 'init_secure_api` first", 'SessionGone'],
    [-32002, 'Encrypted request format error: replayed nonce: this envelope was already accepted', 'Replay'],
    [-32002, 'Decryption error: authentication failed under this session\'s key', 'Envelope'],
    [-32003, 'Encryption error: the answer could not be encrypted', 'EncryptionError'],
    [-32600, 'Invalid Request: no method', 'InvalidRequest'],
    [-32601, 'Method not found', 'MethodNotFound'],
    [-32602, 'Invalid params: missing token', 'InvalidParams'],
    [-32700, 'Parse error', 'ParseError'],
    [-32000, 'the server cannot be reached', 'Host'],
    [-1, 'odd', 'ServerError'],
  ];
  for (const [code, message, variant] of table) {
    const error = fromServerError(code, message);
    assert.ok(error instanceof KeywardError);
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'KeywardError');
    assert.equal(error.code, code);
    assert.equal(error.variant, variant, message);
    assert.ok(error.message.includes(message), error.message);
  }
});

test('−32099 messages give their variant', () => {
  const table = [
    ['Forbidden: get_mnemonic needs the owner role', 'Forbidden', /keyward clients role/],
    ['Forbidden: this client is revoked', 'Revoked', /this client was revoked/],
    ['Forbidden: this client is not registered or is revoked', 'Revoked', /this client was revoked/],
    ['Busy: too many slow calls at once, try again shortly', 'Busy', /did not run/],
    ['Lifecycle: Error opening wallet (is password correct?)', 'Lifecycle', /the wallet does not exist or the password is wrong/],
    ['Lifecycle: Wallet has not been opened', 'Lifecycle', /open it with openWallet/],
    ['Lifecycle: too many failed attempts for this wallet, retry in 2 s', 'Lifecycle', /retry in 2 s/],
    ['InvalidKeychainMask', 'InvalidKeychainMask', /open the wallet again/],
    ['WalletSeedExists: Wallet seed already exists', 'WalletSeedExists', /already exists/],
    ['ArgumentError: mnemonic_length must be 16, 20, 24, 28 or 32', 'ArgumentError', /mnemonic_length/],
    ['StoreError: the wallet store failed; see the server log', 'StoreError', /server log/],
    ['MyApp: detail', 'MyApp', /MyApp: detail/],
    ['not a variant at all', 'ServerError', /not a variant/],
    ['', 'ServerError', /^$/],
  ];
  for (const [message, variant, text] of table) {
    const error = fromServerError(-32099, message);
    assert.equal(error.code, -32099);
    assert.equal(error.variant, variant, message);
    assert.match(error.message, text);
  }
});

test('the constructor keeps its signature: variant, message, { code, cause }', () => {
  const cause = new Error('inner');
  const error = new KeywardError('Bundle', 'bad bundle', { cause });
  assert.equal(error.code, CLIENT_CODES.local);
  assert.equal(error.cause, cause);
  assert.equal(new KeywardError('X', 'y', { code: -32099 }).code, -32099);
});

test("a server's message is bounded and cleaned of control characters and terminal escapes", () => {
  const long = fromServerError(-32099, `ArgumentError: ${'x'.repeat(50_000)}`);
  assert.equal(long.variant, 'ArgumentError');
  assert.ok(long.message.length <= 1_001, `${long.message.length} characters`);
  assert.ok(long.message.endsWith('…'));
  for (const code of [-32099, -32602, -32001, -32002, -1]) {
    const huge = fromServerError(code, 'y'.repeat(2_000_000));
    assert.ok(huge.message.length < 1_200, `code ${code}: ${huge.message.length} characters`);
  }
  const nasty = 'Busy: \u001b[31mred\u001b[0m\u0007 bell\u0000nul\r\nnext\tline\u009b1;2H\u202eevil\u2066 \u2028end\u001b]0;title\u0007';
  for (const code of [-32099, -32602, -32001, -32002]) {
    const error = fromServerError(code, nasty);
    assert.doesNotMatch(error.message, /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\u2028\u2029]/, `code ${code}: ${JSON.stringify(error.message)}`);
    assert.match(error.message, /red/);
    assert.match(error.message, /next line/);
  }
  assert.equal(fromServerError(-32099, nasty).variant, 'Busy');
  // A short, clean message is kept as it is.
  assert.match(fromServerError(-32602, 'Invalid params: missing token').message, /^Invalid params: missing token \(code -32602\)$/);
  // A surrogate pair is not cut in two at the limit.
  const emoji = fromServerError(-1, `${'a'.repeat(999)}😀😀`);
  assert.doesNotMatch(emoji.message, /[\ud800-\udbff](?![\udc00-\udfff])/);
});
