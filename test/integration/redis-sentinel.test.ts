import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Queue, Worker as BullWorker } from 'bullmq';
import type { Redis } from 'ioredis';
import { connectRedis, createLogger, type NixfarmError, sentinelUrlOf } from '@nixfarm/shared';
import { SentinelRedis } from '../harness/sentinel-redis.js';
import { freePort } from '../harness/free-port.js';
import { pollFor } from '../harness/poll.js';

const logger = createLogger({ name: 'test', level: 'silent' });

/**
 * Connecting through Redis Sentinel, on a real primary, replica and three
 * sentinels: the wait's messages name the sentinels and the master, and a
 * client and BullMQ's blocking worker both follow a failover.
 */
describe('Redis through Sentinel', () => {
  let set: SentinelRedis;
  before(async () => {
    set = await SentinelRedis.start({ master: 'farm' });
  });
  after(async () => {
    await set?.stop();
  });

  it('refuses a master name the sentinels do not know, naming the sentinels and the name', async () => {
    const url = sentinelUrlOf(
      set.sentinelPorts.map((p) => `127.0.0.1:${p}`),
      'frm',
    );
    await assert.rejects(connectRedis({ url, logger, setting: '--sentinel-master' }), (error: NixfarmError) => {
      assert.equal(error.code, 'redis-sentinel-master-unknown');
      assert.match(error.message, /the sentinels 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+ do not know a master named 'frm'/);
      assert.match(error.message, /--sentinel-master/);
      return true;
    });
  });

  it('waits while no sentinel answers, saying which sentinels and which master', async () => {
    const url = sentinelUrlOf([`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`], 'farm');
    const notices: string[] = [];
    const controller = new AbortController();
    const connecting = connectRedis({ url, logger, firstRetryMs: 100, signal: controller.signal, onNotice: (m) => notices.push(m) });
    await pollFor(
      () => notices[0],
      10_000,
      () => 'the first notice',
    );
    controller.abort();
    await assert.rejects(connecting, /stopped while waiting for Redis/);
    assert.match(
      notices[0]!,
      /^cannot reach Redis at redis\+sentinel:\/\/127\.0\.0\.1:\d+,127\.0\.0\.1:\d+\/farm \(none of the sentinels 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+ told where master 'farm' is: no answer \(connection refused or closed\)\); .* are the sentinels running/,
    );
  });

  it('follows a failover: the client and a BullMQ worker (its blocking connection) reach the promoted replica', async () => {
    const redis: Redis = await connectRedis({ url: set.url, logger, redisOptions: { maxRetriesPerRequest: null } });
    const queue = new Queue('sentinel-test', { connection: redis });
    const done: string[] = [];
    const worker = new BullWorker(
      'sentinel-test',
      async (job) => {
        done.push(String(job.id));
      },
      { connection: redis, drainDelay: 1 },
    );
    try {
      await queue.add('j', {}, { jobId: 'before' });
      await pollFor(
        () => (done.includes('before') ? true : undefined),
        10_000,
        () => 'the job added before the failover',
      );
      // Replicated before the kill: WAIT returns once the replica has it.
      await redis.set('written-before', '1');
      assert.equal(await redis.wait(1, 5000), 1);
      const before = await set.masterAddress();
      assert.equal(before.port, set.primary.port);
      set.killPrimary();
      const promoted = await pollFor(
        async () => {
          const now = await set.masterAddress();
          return now.port !== before.port ? now : undefined;
        },
        30_000,
        () => 'a replica promoted',
        200,
      );
      assert.equal(promoted.port, set.replica.port);
      assert.equal(await redis.get('written-before'), '1');
      await queue.add('j', {}, { jobId: 'after' });
      await pollFor(
        () => (done.includes('after') ? true : undefined),
        30_000,
        () => 'the job added after the failover',
      );
      assert.equal((await redis.info('replication')).includes('role:master'), true);
    } finally {
      await worker.close(true);
      await queue.close();
      redis.disconnect();
    }
  });
});
