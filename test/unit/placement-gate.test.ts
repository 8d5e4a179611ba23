import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { redisKeys } from '@nixfarm/shared';
import { PlacementGate } from '@nixfarm/worker';

/** A registry with one fast worker whose advertised load the test sets; the slow worker's gate reads it. */
function registry(fast: { running: number }): Redis {
  const listing = () =>
    JSON.stringify({ name: 'fast', systems: ['x86_64-linux'], supportedFeatures: [], mandatoryFeatures: [], maxJobs: 1, speedFactor: 4, running: fast.running, heartbeatAt: Date.now(), startedAt: 1, host: 'h', publicKeyFingerprint: 'f', nixVersion: '2.8' });
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
  it('reads the registry afresh after forgetView, also when a read began before it', async () => {
    const fast = { running: 1 };
    const gate = new PlacementGate({ redis: registry(fast), self: slow, cacheMs: 60_000 });
    const waiting = async () => true;
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
