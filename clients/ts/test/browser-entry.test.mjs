// The browser entry (dist/browser.js) must load in an extension's service worker: no Node built-in
// anywhere in its import graph, ours or our dependencies', and no Node-only global in our own files.

import './helpers/guard.mjs';

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const entry = new URL('../dist/browser.js', import.meta.url);
const dist = new URL('../dist/', import.meta.url).href;
const builtins = new Set(builtinModules.flatMap((name) => [name, name.split('/')[0]]));

/** Every module specifier of a module's static and dynamic imports and re-exports. */
function specifiers(source) {
  const found = new Set();
  const patterns = [
    /\bimport\s+(?:[\w*${}\s,]+?\s+from\s+)?['"]([^'"]+)['"]/g,
    /\bexport\s+(?:\*|\{[^}]*\}|\*\s+as\s+\w+)\s+from\s+['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const pattern of patterns) for (const match of source.matchAll(pattern)) found.add(match[1]);
  return [...found];
}

/** Walks the graph from `start`; returns every module URL and every bad edge. */
function walk(start) {
  const seen = new Set();
  const bad = [];
  const stack = [start.href];
  while (stack.length > 0) {
    const url = stack.pop();
    if (seen.has(url)) continue;
    seen.add(url);
    const source = readFileSync(fileURLToPath(url), 'utf8');
    for (const spec of specifiers(source)) {
      if (spec.startsWith('node:') || builtins.has(spec) || builtins.has(spec.split('/')[0])) {
        bad.push(`${url} imports ${spec}`);
        continue;
      }
      const resolved = spec.startsWith('.') ? new URL(spec, url).href : import.meta.resolve(spec, url);
      if (!resolved.startsWith('file:')) {
        bad.push(`${url} imports ${spec}, which resolves to ${resolved}`);
        continue;
      }
      stack.push(resolved);
    }
  }
  return { modules: [...seen], bad };
}

test('dist/browser.js imports no Node built-in, directly or through any module it loads', () => {
  const { modules, bad } = walk(entry);
  assert.deepEqual(bad, []);
  // The walk really walked: our session and the curve library are in the graph, the Node links are not.
  assert.ok(modules.some((m) => m.endsWith('/dist/session.js')));
  assert.ok(modules.some((m) => m.includes('@noble/curves')));
  for (const nodeOnly of ['links/http.js', 'links/unix.js', 'links/native-stdio.js', 'bundle.js', 'connect.js', 'pairing.js', 'launch.js']) {
    assert.ok(!modules.some((m) => m.endsWith(`/dist/${nodeOnly}`)), `${nodeOnly} is in the browser graph`);
  }
});

test('our modules in the browser graph use no Node-only global', () => {
  const { modules } = walk(entry);
  for (const url of modules.filter((m) => m.startsWith(dist))) {
    const source = readFileSync(fileURLToPath(url), 'utf8').replace(/\/\/.*$/gm, '').replace(/\/\*[\s\S]*?\*\//g, '');
    for (const global of [/\bBuffer\b/, /\bprocess\./, /\b__dirname\b/, /\brequire\(/]) {
      assert.doesNotMatch(source, global, `${url} uses ${global}`);
    }
  }
});

test('the checker catches a Node import (it is not vacuous)', () => {
  assert.deepEqual(specifiers("import { x } from 'node:fs';\nexport * from './a.js';\nconst m = await import('os');"), ['node:fs', './a.js', 'os']);
  const { bad } = walk(new URL('../dist/index.js', import.meta.url));
  assert.ok(bad.some((b) => b.includes('node:')), 'the Node entry does import Node built-ins');
});

test('the browser entry exports what an extension needs', async () => {
  const browser = await import(pathToFileURL(fileURLToPath(entry)).href);
  for (const name of ['Session', 'SecureSession', 'Keyward', 'KeywardError', 'NativeBrowserLink', 'connectNative', 'METHODS', 'KeywardMethods']) {
    assert.ok(name in browser, name);
  }
  assert.ok(!('connect' in browser));
});
