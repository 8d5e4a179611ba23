import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Queue, Worker as BullWorker, type Job } from 'bullmq';
import type { BuildExecutor } from '@nixfarm/build';
import { bullmqOptions, checkJobId, createLogger } from '@nixfarm/shared';
import { JobRunner, type CheckExecutor } from '@nixfarm/worker';
import { privateRedisForSuite } from '../harness/private-redis.js';

/** A check job's payload is validated like a build's, on a real redis-server: a malformed one fails at once with a message naming the bad field. */
const QUEUE = 'check-runner-test';

describe('running a check job', () => {
  const client = privateRedisForSuite('check job runner test');
  const closers: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const close of closers) await close().catch(() => undefined);
  });

  async function taken(jobId: string, data: unknown): Promise<{ job: Job; token: string; queue: Queue }> {
    const redis = client();
    const queue = new Queue(QUEUE, bullmqOptions(redis));
    const bull = new BullWorker(QUEUE, null, { ...bullmqOptions(redis), autorun: false, name: 'w1' });
    closers.push(
      () => bull.close(true),
      () => queue.close(),
    );
    await queue.add('check', data, { jobId });
    const job = (await bull.getNextJob('token', { block: false })) as Job;
    assert.equal(job.id, jobId);
    return { job, token: 'token', queue };
  }

  const logger = createLogger({ name: 'test', level: 'silent' });
  const neverRuns = {
    execute: async () => assert.fail('a malformed job must not run'),
  };

  it('fails a malformed check payload with UnrecoverableError and a message that names the field', async () => {
    const jobId = checkJobId('a'.repeat(32), 0);
    const { job, token, queue } = await taken(jobId, { build: { drvPath: '/nix/store/x.drv' }, expected: {}, maxNarBytes: -1, background: false });
    const runner = new JobRunner({
      executor: neverRuns as unknown as BuildExecutor,
      checks: neverRuns as unknown as CheckExecutor,
      logger,
      lockDurationMs: 30_000,
    });
    await runner.run(job, token);
    const failed = await queue.getJob(jobId);
    assert.equal(await failed?.getState(), 'failed');
    assert.match(failed?.failedReason ?? '', new RegExp(`check job ${jobId} payload`));
    assert.match(failed?.failedReason ?? '', /maxNarBytes/);
  });
});
