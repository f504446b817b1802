// An Owner API V3 client written the way existing V3 wallet clients are: Node's built-in `crypto`
// and `http` modules only (no npm packages, no Rust). It speaks plain HTTP to --http-insecure and
// sends no Keyward-Session header, like a client written for grin-wallet.
//
// usage: node v3_client.mjs PORT
import crypto from 'node:crypto';
import http from 'node:http';
import assert from 'node:assert/strict';

const port = Number(process.argv[2]);
let nextId = 1;

function post(body) {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = http.request(
      { host: '127.0.0.1', port, path: '/v3/owner', method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Content-Length': data.length } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          try {
            assert.equal(res.statusCode, 200);
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          } catch (e) { reject(e); }
        });
      });
    req.on('error', reject);
    req.end(data);
  });
}

// init_secure_api: our secp256k1 key, the server's key; the shared key is the X coordinate.
const ecdh = crypto.createECDH('secp256k1');
ecdh.generateKeys();
const init = await post({ jsonrpc: '2.0', method: 'init_secure_api', id: nextId++,
  params: { ecdh_pubkey: ecdh.getPublicKey('hex', 'compressed') } });
assert.ok(init.result && typeof init.result.Ok === 'string', JSON.stringify(init));
const key = ecdh.computeSecret(Buffer.from(init.result.Ok, 'hex'));
assert.equal(key.length, 32);

async function call(method, params) {
  const id = nextId++;
  const nonce = crypto.randomBytes(12);
  const cipher = crypto.createCipheriv('aes-256-gcm', key, nonce);
  const plain = Buffer.from(JSON.stringify({ jsonrpc: '2.0', method, id, params }));
  const body = Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
  const outer = await post({ jsonrpc: '2.0', method: 'encrypted_request_v3', id: nextId++,
    params: { nonce: nonce.toString('hex'), body_enc: body.toString('base64') } });
  assert.ok(outer.result && outer.result.Ok, `envelope error: ${JSON.stringify(outer)}`);
  const answerNonce = Buffer.from(outer.result.Ok.nonce, 'hex');
  assert.notDeepEqual(answerNonce, nonce);
  const raw = Buffer.from(outer.result.Ok.body_enc, 'base64');
  const decipher = crypto.createDecipheriv('aes-256-gcm', key, answerNonce);
  decipher.setAuthTag(raw.subarray(raw.length - 16));
  const inner = JSON.parse(Buffer.concat([decipher.update(raw.subarray(0, raw.length - 16)), decipher.final()]).toString('utf8'));
  assert.equal(inner.id, id);
  return inner;
}

const created = await call('create_wallet', { name: null, mnemonic: null, mnemonic_length: 32, password: 'node-pass' });
assert.deepEqual(created.result, { Ok: null }, JSON.stringify(created));
const opened = await call('open_wallet', { name: null, password: 'node-pass' });
const token = opened.result.Ok;
assert.match(token, /^[0-9a-f]{64}$/);
const accounts = await call('accounts', { token });
assert.deepEqual(accounts.result.Ok, [{ label: 'default', path: '0200000000000000000000000000000000' }]);
const closed = await call('close_wallet', { name: null });
assert.deepEqual(closed.result, { Ok: null });
const after = await call('accounts', { token });
assert.equal(after.error.code, -32099);
assert.equal(after.error.message, 'Lifecycle: Wallet has not been opened');
const wrong = await call('open_wallet', { name: null, password: 'nope' });
assert.equal(wrong.error.message, 'Lifecycle: Error opening wallet (is password correct?)');
console.log(JSON.stringify({ ok: true, accounts: accounts.result.Ok }));
