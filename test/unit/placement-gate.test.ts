import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { redisKeys } from '@nixfarm/shared';
import { PlacementGate } from '@nixfarm/worker';

/** A registry with one fast worker whose advertised load the test sets; the slow worker's gate reads it. */
function registry(fast: { running: number }): Redis {
  const listing = () =>
    JSON.stringify({
      name: 'fast',
      systems: ['x86_64-linux'],
      supportedFeatures: [],
      mandatoryFeatures: [],
      maxJobs: 1,
      speedFactor: 4,
      running: fast.running,
      heartbeatAt: Date.now(),
      startedAt: 1,
      host: 'h',
      publicKeyFingerprint: 'f',
      nixVersion: '2.8',
    });
  // The read sees the registry as it was when it began (its first command).
  let snapshot = '';
  return {
    smembers: async (key: string) => {
      snapshot = listing();
      return key === redisKeys.workers ? ['fast'] : [];
    },
    mget: async () => [snapshot],
  } as unknown as Redis;
}

const QUEUE = 'build@x86_64-linux';
const slow = () => ({ name: 'slow', running: 0, maxJobs: 1, speedFactor: 1 });

describe("the slow worker's placement gate", () => {
  it('restarts the grace time when other jobs are next in line: a better worker that keeps taking work is never overtaken', async () => {
    const gate = new PlacementGate({ redis: registry({ running: 0 }), self: slow, graceMs: 1500, cacheMs: 0 });
    // A chain: the fast worker took each link within a second, so every look finds a new one next in line.
    for (const [at, link] of [
      [0, 'link0'],
      [1000, 'link1'],
      [2000, 'link2'],
      [3000, 'link3'],
    ] as const) {
      assert.deepEqual(await gate.decide(QUEUE, async () => [link], at), { take: false, yieldTo: ['fast'] }, `${link} at ${at} ms`);
    }
    // Stuck on link3 (next in line since 3000 ms): taken anyway once the grace time ran out for it.
    assert.deepEqual(await gate.decide(QUEUE, async () => ['link3'], 4000), { take: false, yieldTo: ['fast'] });
    assert.deepEqual(await gate.decide(QUEUE, async () => ['link3'], 4500), { take: true, yieldTo: [] });
  });

  it('reads the registry afresh after forgetView, also when a read began before it', async () => {
    const fast = { running: 1 };
    const gate = new PlacementGate({ redis: registry(fast), self: slow, cacheMs: 60_000 });
    const waiting = async () => ['j1'];
    assert.deepEqual(await gate.decide(QUEUE, waiting), { take: true, yieldTo: [] }, 'fast is busy');
    fast.running = 0;
    assert.deepEqual(await gate.decide(QUEUE, waiting), { take: true, yieldTo: [] }, 'the cached view still has it busy');
    gate.forgetView();
    assert.deepEqual(await gate.decide(QUEUE, waiting), { take: false, yieldTo: ['fast'] }, 'after a wake-up: fast is free');

    // A read under way when the wake-up comes must not be cached as the view after it.
    fast.running = 1;
    gate.forgetView();
    const before = gate.decide(QUEUE, waiting);
    gate.forgetView();
    fast.running = 0;
    assert.deepEqual(await before, { take: true, yieldTo: [] });
    assert.deepEqual(await gate.decide(QUEUE, waiting), { take: false, yieldTo: ['fast'] });
  });
});
