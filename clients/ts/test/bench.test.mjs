// bench/accounts.mjs's measuring loop: calls/s and p50 count the calls that succeeded, not failures.

import './helpers/guard.mjs';

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { callLoop } from '../bench/loop.mjs';

test('failed calls are counted as errors, and their latencies are not recorded', async () => {
  let n = 0;
  // Every other call fails at once; the others take 5 ms.
  const call = async () => {
    n += 1;
    if (n % 2 === 0) throw new Error('refused');
    await sleep(5);
  };
  const { latencies, errors } = await callLoop([1, 2], call, 200);
  assert.ok(errors > 0);
  assert.equal(latencies.length + errors, n);
  assert.ok(latencies.length > 0);
  assert.ok(latencies.every((ms) => ms >= 4), `a failed call's latency was recorded: ${Math.min(...latencies)} ms`);
});
