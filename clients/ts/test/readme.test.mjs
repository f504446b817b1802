// The README's "Front ends in TypeScript" example, run as a user would run it: the very block from the
// README, in a fresh directory, importing the package by its name (a node_modules link to this
// package), with KEYWARD_BIN naming the binary under test.

import './helpers/guard.mjs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { keywardBinary, tempDir } from './helpers/server.mjs';

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const readme = resolve(packageDir, '../../README.md');

/** The first ```js block after the heading `## Front ends in TypeScript`. */
function example() {
  const text = readFileSync(readme, 'utf8');
  const section = text.indexOf('\n## Front ends in TypeScript\n');
  assert.ok(section >= 0, 'the README has a "Front ends in TypeScript" section');
  const start = text.indexOf('```js\n', section);
  const end = text.indexOf('\n```', start + 6);
  assert.ok(start > section && end > start, 'the section has a js block');
  return text.slice(start + 6, end + 1);
}

test("the README's TypeScript example runs as printed: launch, create, open, accounts, sign, close, stop", () => {
  const code = example();
  const lines = code.trim().split('\n').length;
  assert.ok(lines <= 15, `the example is ${lines} lines`);
  assert.match(code, /from '@keyward\/client'/);
  const dir = tempDir('keyward-readme-');
  try {
    // `npm install ./clients/ts` makes this link; a symlink does the same without the registry.
    mkdirSync(join(dir, 'node_modules', '@keyward'), { recursive: true });
    symlinkSync(packageDir, join(dir, 'node_modules', '@keyward', 'client'));
    writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
    writeFileSync(join(dir, 'example.mjs'), code);
    const run = spawnSync(process.execPath, ['example.mjs'], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, KEYWARD_BIN: keywardBinary(), RUST_LOG: 'warn' },
    });
    assert.equal(run.status, 0, `the example failed:\n${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, /label: 'default', path: '0200000000000000000000000000000000'/);
    assert.match(run.stdout, /signature: '[0-9a-f]{128}'/);
    // Its data directory holds the wallet store and nothing of the run's certificates.
    assert.ok(existsSync(join(dir, 'wallet-data', 'store')));
    assert.equal(existsSync(join(dir, 'wallet-data', 'tls')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
