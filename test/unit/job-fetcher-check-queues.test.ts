import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Queue } from 'bullmq';
import { bullmqOptions, checkJobId, checkQueueNameFor, createLogger, queueNameFor, redisKeys, type BuildRequirement } from '@nixfarm/shared';
import { JobFetcher, type FetchedJob } from '@nixfarm/worker';
import { privateRedisForSuite } from '../harness/private-redis.js';

/**
 * Which check queues a worker serves and in which order it takes their
 * jobs, on a real redis-server with real BullMQ queues: never a check of
 * outputs it built itself (`!WORKER`), requested checks beside builds, and
 * sampled checks only when no build or requested check is there.
 */
const LINUX: BuildRequirement = { system: 'x86_64-linux', requiredFeatures: [] };
const BUILDS = queueNameFor(LINUX);
const REQUESTED = checkQueueNameFor({ requirement: LINUX, background: false, excludedWorker: 'other' });
const MINE = checkQueueNameFor({ requirement: LINUX, background: false, excludedWorker: 'w1' });
const SAMPLED = checkQueueNameFor({ requirement: LINUX, background: true });
const DARWIN_CHECKS = checkQueueNameFor({ requirement: { system: 'x86_64-darwin', requiredFeatures: [] }, background: false });
const hash = (c: string) => c.repeat(32);

describe("the job fetcher's check queues", () => {
  const client = privateRedisForSuite('check queue fetch test');

  async function setup(sampleAfterIdleMs = 0) {
    const redis = client();
    await redis.flushall();
    await redis.sadd(redisKeys.queues, BUILDS);
    await redis.sadd(redisKeys.checkQueues, REQUESTED, MINE, SAMPLED, DARWIN_CHECKS);
    const queues = new Map([BUILDS, REQUESTED, MINE, SAMPLED, DARWIN_CHECKS].map((name) => [name, new Queue(name, bullmqOptions(redis))]));
    const add = async (queue: string, jobId: string) => void (await queues.get(queue)!.add('j', { any: 'payload' }, { jobId }));
    const fetcher = new JobFetcher({
      redis,
      subscriber: redis.duplicate(),
      capabilities: { systems: ['x86_64-linux'], supportedFeatures: [], mandatoryFeatures: [] },
      workerName: 'w1',
      logger: createLogger({ name: 'test', level: 'silent' }),
      lockDurationMs: 30_000,
      sampleAfterIdleMs,
    });
    await fetcher.refreshQueues();
    const close = async () => {
      await fetcher.close();
      for (const q of queues.values()) await q.close();
    };
    return { fetcher, add, close };
  }

  const seen = (f: FetchedJob | undefined) => (f === undefined ? undefined : { id: f.job.id, queue: f.queue, kind: f.kind, background: f.background });

  it('takes builds and requested checks first, sampled checks last, and never a check that excludes it or that it cannot build', async () => {
    const { fetcher, add, close } = await setup();
    try {
      await add(SAMPLED, checkJobId(hash('s'), 0));
      await add(MINE, checkJobId(hash('m'), 0));
      await add(DARWIN_CHECKS, checkJobId(hash('d'), 0));
      await add(REQUESTED, checkJobId(hash('c'), 0));
      await add(BUILDS, hash('b'));
      assert.equal(await fetcher.realWorkWaiting(), true);

      const first = [seen(await fetcher.fetch()), seen(await fetcher.fetch())].sort((a, b) => String(a?.id).localeCompare(String(b?.id)));
      assert.deepEqual(first, [
        { id: hash('b'), queue: BUILDS, kind: 'build', background: false },
        { id: checkJobId(hash('c'), 0), queue: REQUESTED, kind: 'check', background: false },
      ]);
      assert.equal(await fetcher.realWorkWaiting(), false, 'a waiting sampled check is no real work');

      // Real work queued now still goes before the sampled check that waited longer.
      await add(BUILDS, hash('e'));
      assert.deepEqual(seen(await fetcher.fetch()), { id: hash('e'), queue: BUILDS, kind: 'build', background: false });
      assert.deepEqual(seen(await fetcher.fetch()), { id: checkJobId(hash('s'), 0), queue: SAMPLED, kind: 'check', background: true });
      assert.equal(await fetcher.fetch(), undefined, "the check of w1's own outputs and the darwin check stay for other workers");
    } finally {
      await close();
    }
  });

  it('serves a check queue listed after it started once it refreshes its queues (as a wake-up for an unknown queue does)', async () => {
    const { fetcher, close } = await setup();
    const late = checkQueueNameFor({ requirement: LINUX, background: false, excludedWorker: 'w2' });
    const queue = new Queue(late, bullmqOptions(client()));
    try {
      await queue.add('j', {}, { jobId: checkJobId(hash('k'), 1) });
      assert.equal(await fetcher.fetch(), undefined, 'not listed yet');
      await client().sadd(redisKeys.checkQueues, late);
      await fetcher.refreshQueues();
      assert.deepEqual(seen(await fetcher.fetch()), { id: checkJobId(hash('k'), 1), queue: late, kind: 'check', background: false });
    } finally {
      await queue.close();
      await close();
    }
  });

  it('leaves sampled checks alone until it has taken no real work for a while: a run between two builds keeps its worker', async () => {
    const { fetcher, add, close } = await setup(400);
    try {
      await add(SAMPLED, checkJobId(hash('s'), 0));
      await add(BUILDS, hash('b'));
      assert.deepEqual(seen(await fetcher.fetch()), { id: hash('b'), queue: BUILDS, kind: 'build', background: false });
      assert.equal(await fetcher.fetch(), undefined, 'a build was taken just now');
      await new Promise((r) => setTimeout(r, 450));
      assert.deepEqual(seen(await fetcher.fetch()), { id: checkJobId(hash('s'), 0), queue: SAMPLED, kind: 'check', background: true });
    } finally {
      await close();
    }
  });
});
