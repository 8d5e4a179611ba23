import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FarmHistoryStore } from '@nixfarm/coordinator';
import { HISTORY_MAX_SAMPLES, redisKeys, type HistorySample } from '@nixfarm/shared';
import { privateRedisForSuite } from '../harness/private-redis.js';

const sample = (at: number): HistorySample => ({
  at,
  systems: [{ system: 'x86_64-linux', waiting: at % 7, running: 1, workersUp: 2, workersNeeded: 0 }],
  workersUp: 2,
  workersRegistered: 2,
  finished: { succeeded: 1 },
});

/** The history list on a real redis-server: its bound, and reading a range from its end. */
describe('farm history store (real Redis)', () => {
  const redis = privateRedisForSuite('farm history store');

  it('keeps at most 8640 samples, the newest, however many are pushed', async () => {
    const store = new FarmHistoryStore({ redis: redis(), intervalSeconds: 1 });
    assert.equal(store.maxSamples, HISTORY_MAX_SAMPLES);
    const pushed = HISTORY_MAX_SAMPLES + 500;
    // Appended in parallel batches: each append is its own RPUSH+LTRIM transaction, as the sampler's are.
    for (let start = 0; start < pushed; start += 500)
      await Promise.all(Array.from({ length: Math.min(500, pushed - start) }, (_, i) => store.append(sample((start + i + 1) * 1000))));
    assert.equal(await redis().llen(redisKeys.farmHistory), HISTORY_MAX_SAMPLES);
    const all = await store.since(0, 86_400);
    assert.equal(all.length, HISTORY_MAX_SAMPLES);
    assert.equal(all[0]!.at, 501_000, 'the oldest were trimmed');
    assert.equal(all.at(-1)!.at, pushed * 1000);
    // A long interval keeps 24 h of its samples.
    assert.equal(new FarmHistoryStore({ redis: redis(), intervalSeconds: 60 }).maxSamples, 1440);
  });

  it('answers the samples of a range oldest first, reading back past samples of an earlier, shorter interval', async () => {
    await redis().del(redisKeys.farmHistory);
    const now = 10_000_000;
    // 30 min at one a second (an earlier coordinator), then 10 min at one every 10 s.
    const store = new FarmHistoryStore({ redis: redis(), intervalSeconds: 10 });
    for (let t = now - 2400; t < now - 600; t += 1) await store.append(sample(t * 1000));
    for (let t = now - 600; t <= now; t += 10) await store.append(sample(t * 1000));
    const lastHalfHour = await store.since((now - 1800) * 1000, 1800);
    assert.equal(lastHalfHour.length, 1200 + 61);
    assert.equal(lastHalfHour[0]!.at, (now - 1800) * 1000);
    assert.deepEqual(
      lastHalfHour.map((s) => s.at),
      [...lastHalfHour.map((s) => s.at)].sort((a, b) => a - b),
    );
    assert.equal((await store.since((now - 300) * 1000, 300)).length, 31);
    // A sample some other version wrote in another shape is left out.
    await redis().rpush(redisKeys.farmHistory, '{"at":"yesterday"}', 'not json');
    assert.equal((await store.since((now - 300) * 1000, 300)).length, 31);
  });
});
