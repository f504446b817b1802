// spec/openrpc.json and src/methods.gen.ts cannot drift: the generator runs in memory and must give
// the committed file byte for byte; every method of the spec is on the Keyward class and in METHODS.

import './helpers/guard.mjs';

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { generate, OUTPUT_PATH, SPEC_PATH } from '../scripts/generate.mjs';
import { Keyward, KeywardMethods, METHODS } from '../dist/index.js';

const spec = JSON.parse(readFileSync(SPEC_PATH, 'utf8'));
const callable = spec.methods.filter((m) => !['init_secure_api', 'encrypted_request_v3'].includes(m.name));

test('src/methods.gen.ts is what the generator makes of spec/openrpc.json (run `npm run generate`)', () => {
  assert.equal(readFileSync(OUTPUT_PATH, 'utf8'), generate(readFileSync(SPEC_PATH, 'utf8')));
});

test('every method of the spec is a typed method and a row of METHODS', () => {
  assert.equal(METHODS.length, callable.length);
  for (const method of callable) {
    const row = METHODS.find((r) => r.name === method.name);
    assert.ok(row, method.name);
    assert.equal(row.role, method['x-keyward-role']);
    assert.equal(row.speed, method['x-keyward-speed']);
    assert.deepEqual(row.params, method.params.map((p) => p.name));
    assert.equal(typeof KeywardMethods.prototype[row.method], 'function', row.method);
    assert.ok(Keyward.prototype instanceof KeywardMethods);
  }
});

test('a typed method sends its wire name and params, and checks the kind of its result', async () => {
  const calls = [];
  class Fake extends KeywardMethods {
    constructor(answer) {
      super();
      this.answer = answer;
    }
    async call(method, params) {
      calls.push([method, params]);
      return this.answer;
    }
  }
  assert.equal(await new Fake('tok').openWallet({ name: 'w', password: 'p' }), 'tok');
  assert.deepEqual(calls.pop(), ['open_wallet', { name: 'w', password: 'p' }]);
  assert.deepEqual(await new Fake([]).listWallets(), []);
  assert.deepEqual(calls.pop(), ['list_wallets', {}]);
  await assert.rejects(new Fake(5).openWallet({ name: null, password: 'p' }), (e) => e.name === 'KeywardError' && e.variant === 'Protocol');
  await assert.rejects(new Fake('x').listWallets(), (e) => e.name === 'KeywardError' && /array/.test(e.message));
  await assert.rejects(new Fake({}).createWallet({ name: null, mnemonic: null, mnemonic_length: 16, password: 'p' }), (e) => e.variant === 'Protocol');
});

test('the generator refuses a schema shape it does not know', () => {
  const odd = structuredClone(spec);
  odd.methods[2].params = [{ name: 'x', required: true, schema: { type: 'tuple' } }];
  assert.throws(() => generate(JSON.stringify(odd)), /unsupported schema/);
});
