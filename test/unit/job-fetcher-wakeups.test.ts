import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { createLogger } from '@nixfarm/shared';
import { JobFetcher } from '@nixfarm/worker';

/** No queue is served: fetch() passes over nothing, which is all these tests need of it. */
function fetcher(idlePollMs: number): JobFetcher {
  return new JobFetcher({
    redis: {} as Redis,
    subscriber: {} as Redis,
    capabilities: { systems: ['x86_64-linux'], supportedFeatures: [], mandatoryFeatures: [] },
    workerName: 'w1',
    logger: createLogger({ name: 'test', level: 'silent' }),
    lockDurationMs: 30_000,
    idlePollMs,
  });
}

async function elapsed(p: Promise<unknown>): Promise<number> {
  const start = performance.now();
  await p;
  return performance.now() - start;
}

describe("the job fetcher's wake-ups", () => {
  it('keeps a wake-up that comes while it is not idle (mid-pass, slots full): the next idle returns at once', async () => {
    const f = fetcher(60_000);
    await f.fetch();
    f.wakeUp();
    assert.ok((await elapsed(f.idle())) < 5_000, 'idle must not wait for the poll');
  });

  it('forgets a wake-up from before a pass began: that pass saw the work it announced', async () => {
    const f = fetcher(200);
    f.wakeUp();
    await f.fetch();
    assert.ok((await elapsed(f.idle())) >= 150, 'idle waits for the next wake-up or the poll');
  });
});
