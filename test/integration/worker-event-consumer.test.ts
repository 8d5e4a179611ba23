import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { ReportGate, WorkerEventConsumer, type WorkerEventHandler } from '@nixfarm/coordinator';
import { REPORT_SIGNATURE_FIELD, redisKeys, type WorkerEvent } from '@nixfarm/shared';
import { authorizedKeysWith, reportKeyPair, type ReportKeyPair } from '../harness/report-keys.js';
import { privateRedisForSuite } from '../harness/private-redis.js';
import { sleep } from '../harness/poll.js';

/**
 * The consumer of worker reports across a coordinator restart, on a real
 * redis-server: what the previous process read but never acknowledged is
 * applied first, then new reports, and an idle consumer blocks in Redis
 * instead of polling it. The handler is a recorder: this tests the consumer
 * alone.
 */
function report(i: number): WorkerEvent {
  const hash = `${i}`.padStart(32, '0');
  return { type: 'started', drvPath: `/nix/store/${hash}-d${i}.drv`, worker: 'w1', jobId: hash, attempt: 0, at: Date.now() };
}

describe('the worker event consumer after a restart', () => {
  const client = privateRedisForSuite('worker event consumer test');

  let key: ReportKeyPair;
  const add = (i: number) => {
    const payload = JSON.stringify(report(i));
    return client().xadd(redisKeys.workerEvents, '*', 'e', payload, REPORT_SIGNATURE_FIELD, key.signer.sign(redisKeys.workerEvents, 'w1', payload));
  };

  it('applies the reports its previous life read but did not acknowledge, then new ones, and then waits in Redis without spinning', async () => {
    const redis = client();
    key = await reportKeyPair();
    const logger = pino({ level: 'silent' });
    const gate = new ReportGate({ redis, keys: await authorizedKeysWith(key), logger });
    await redis.xgroup('CREATE', redisKeys.workerEvents, redisKeys.workerEventsGroup, '0', 'MKSTREAM');
    for (const i of [1, 2, 3]) await add(i);
    // The previous process read two reports and died before acknowledging them.
    await redis.xreadgroup('GROUP', redisKeys.workerEventsGroup, 'coordinator', 'COUNT', 2, 'STREAMS', redisKeys.workerEvents, '>');
    const applied: string[] = [];
    const handler = {
      handleAll: async (events: readonly WorkerEvent[]) => void applied.push(...events.map((e) => e.drvPath.slice(-6))),
    } as unknown as WorkerEventHandler;
    const consumer = new WorkerEventConsumer({ redis: redis.duplicate(), handler, gate, logger, blockMs: 1000 });
    await consumer.start();
    try {
      const deadline = Date.now() + 10_000;
      while (applied.length < 3 && Date.now() < deadline) await sleep(50);
      assert.deepEqual(applied, ['d1.drv', 'd2.drv', 'd3.drv'], 'the unacknowledged two first, then the unread one');
      await add(4);
      while (applied.length < 4 && Date.now() + 0 < deadline + 10_000) await sleep(50);
      assert.deepEqual(applied.slice(3), ['d4.drv']);
      // Idle now: each XREADGROUP blocks for a second; a consumer stuck on reading history by id would call it thousands of times.
      const calls = async () => Number(/cmdstat_xreadgroup:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);
      const before = await calls();
      await sleep(2500);
      const during = (await calls()) - before;
      assert.ok(during <= 5, `${during} XREADGROUP calls in 2.5 s while idle`);
      const pending = (await redis.xpending(redisKeys.workerEvents, redisKeys.workerEventsGroup)) as [number, ...unknown[]];
      assert.equal(pending[0], 0, 'every applied report is acknowledged');
    } finally {
      await consumer.stop();
    }
  });
});
