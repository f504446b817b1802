// The measuring loop of bench/accounts.mjs, on its own so that test/bench.test.mjs can check it.

/**
 * Calls `call(client)` over and over on every client at once (each its own loop) until `ms` have
 * passed. Returns the latencies (ms) of the calls that succeeded, and how many failed.
 */
export async function callLoop(clients, call, ms) {
  const latencies = [];
  const end = performance.now() + ms;
  let errors = 0;
  await Promise.all(
    clients.map(async (client) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        try {
          await call(client);
        } catch {
          // A failure is an error, not a call: it counts in neither calls/s nor the latencies.
          errors += 1;
          continue;
        }
        latencies.push(performance.now() - t0);
      }
    }),
  );
  return { latencies, errors };
}
