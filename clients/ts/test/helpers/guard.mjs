// Every suite imports this first: an unhandled rejection anywhere in the process fails the suite
// (the package must never leave a promise rejected with nobody listening).

import { after } from 'node:test';
import assert from 'node:assert/strict';

const unhandled = [];
process.on('unhandledRejection', (reason) => {
  unhandled.push(reason);
});

after(() => {
  assert.deepEqual(unhandled.map(String), [], 'unhandled rejections');
});
