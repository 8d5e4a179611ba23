import ssh2 from 'ssh2';
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Queue, Worker as BullWorker, type Job } from 'bullmq';
import { ReportSigner, bullmqOptions, createLogger, readWorkerRegistry, redisKeys, type BuildJob, type WorkerEvent, type WorkerInfo } from '@nixfarm/shared';
import { BuildExecutor, SAME_STORE, WorkerEventPublisher } from '@nixfarm/build';
import { BuildSlots, JobRunner, WorkerHeartbeat } from '@nixfarm/worker';
import { privateRedisForSuite } from '../harness/private-redis.js';

/**
 * The order in which a worker gives up a build slot, on a real redis-server:
 * other workers must read the slot free in the registry before the finished
 * report is in the stream (the coordinator queues the next build on that
 * report and wakes every worker), while the worker itself holds the slot until
 * BullMQ has completed the job, so it never runs more than max-jobs.
 */
const logger = createLogger({ name: 'test', level: 'silent' });
const QUEUE = 'slot-test';
const BUILD: BuildJob = {
  drvPath: '/nix/store/0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-hello-2.12.drv',
  name: 'hello-2.12',
  system: 'x86_64-linux',
  requiredFeatures: [],
  outputs: { out: '/nix/store/1c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-hello-2.12' },
  inputPaths: [],
};

interface AtReport {
  registryRunning: number | undefined;
  slotsTaken: number;
  full: boolean;
  jobState: string;
  inStream: number;
}

describe("a worker's build slot and its advertised load", () => {
  const client = privateRedisForSuite('slot advertisement test');
  const closers: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const close of closers) await close().catch(() => undefined);
  });

  it('is advertised free before the finished report is in the stream, and held until BullMQ completed the job', async () => {
    const redis = client();
    const queue = new Queue(QUEUE, bullmqOptions(redis));
    const bull = new BullWorker(QUEUE, null, { ...bullmqOptions(redis), autorun: false, name: 'fast' });
    closers.push(
      () => bull.close(true),
      () => queue.close(),
    );
    await queue.add(BUILD.name, BUILD, { jobId: 'job1' });
    const job = (await bull.getNextJob('token1', { block: false })) as Job;
    assert.equal(job.id, 'job1');

    let slots!: BuildSlots;
    const info = (): WorkerInfo => ({
      name: 'fast',
      systems: ['x86_64-linux'],
      supportedFeatures: [],
      mandatoryFeatures: [],
      maxJobs: 1,
      speedFactor: 4,
      running: slots.advertised,
      heartbeatAt: Date.now(),
      startedAt: 1,
      host: 'h',
      publicKeyFingerprint: 'f',
      nixVersion: '2.8',
    });
    const heartbeat = new WorkerHeartbeat(redis, info);
    slots = new BuildSlots({ maxJobs: 1, advertise: () => heartbeat.beat() });

    // What another worker and the coordinator could read the moment the report goes into the stream.
    let atReport: AtReport | undefined;
    class WatchingPublisher extends WorkerEventPublisher {
      override async publish(event: WorkerEvent): Promise<void> {
        if (event.type === 'finished') {
          const registry = await readWorkerRegistry(redis);
          atReport = {
            registryRunning: registry.find((w) => w.name === 'fast')?.running,
            slotsTaken: slots.taken,
            full: slots.full,
            jobState: await job.getState(),
            inStream: await redis.xlen(redisKeys.workerEvents),
          };
        }
        await super.publish(event);
      }
    }
    const executor = new BuildExecutor({
      workerName: 'fast',
      builder: { build: async () => ({ status: 'succeeded' }) },
      mover: SAME_STORE,
      publisher: new WatchingPublisher(redis, ReportSigner.fromPrivateKey(ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256 }).private)),
      logger,
      beforeReport: (jobId) => slots.releasing(jobId),
    });
    const runner = new JobRunner({ executor, logger, lockDurationMs: 30_000 });

    let freed = false;
    const nextFree = slots.nextFree().then(() => (freed = true));
    slots.run(String(job.id), () => runner.run(job, 'token1'));
    assert.equal(slots.taken, 1);
    assert.equal(slots.full, true);
    await slots.settled();
    await nextFree;

    assert.deepEqual(
      atReport,
      { registryRunning: 0, slotsTaken: 1, full: true, jobState: 'active', inStream: 1 },
      'free in the registry, yet still held and active, before the report',
    );
    assert.equal(freed, true, 'a fetch waiting for the slot goes on once it is free');
    assert.equal(slots.taken, 0);
    assert.equal(await job.getState(), 'completed');
    const events = await redis.xrange(redisKeys.workerEvents, '-', '+');
    assert.deepEqual(
      events.map(([, fields]) => (JSON.parse(fields[1]!) as WorkerEvent).type),
      ['started', 'finished'],
    );
    assert.equal((await readWorkerRegistry(redis)).find((w) => w.name === 'fast')?.running, 0);
  });
});
