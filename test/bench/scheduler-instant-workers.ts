import os from 'node:os';
import { Redis } from 'ioredis';
import { Worker as BullWorker, type Job } from 'bullmq';
import { WorkerEventPublisher } from '@nixfarm/build';
import {
  buildJobSchema,
  canBuild,
  parseQueueName,
  redisKeys,
  removeWorker,
  type Logger,
  type ReportSigner,
  type WorkerCapabilities,
  type WorkerInfo,
} from '@nixfarm/shared';

export interface InstantWorkersOptions {
  redisUrl: string;
  count: number;
  /** jobs each worker holds at once (its max-jobs) */
  slots: number;
  logger: Logger;
  /** signs their reports with a key the bench authorised on the coordinator; each worker posts in a session of its own */
  signer: ReportSigner;
  /** BullMQ's key prefix of the coordinator under test (a baseline from before nixfarm:bull used BullMQ's default, bull) */
  bullmqPrefix: string;
}

const CAPABILITIES = { systems: ['x86_64-linux'], supportedFeatures: ['big-parallel', 'kvm'], mandatoryFeatures: [] as string[] } satisfies WorkerCapabilities;
/** heartbeat */
const TICK_MS = 1000;
/** a look for new queues: often, so that the first build's time measures the coordinator, not this poll */
const DISCOVER_MS = 25;
const ZERO_TIMINGS = { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 };

/**
 * Workers whose builds take no time: each registers and heartbeats in the
 * worker registry like a real one, takes jobs from the BullMQ queues it may
 * serve with BullMQ's own Worker (the cheapest consumer BullMQ has, so the
 * bench measures the coordinator rather than its workers), reports `started`
 * and `finished` (succeeded, with the job's outputs) on the worker-event
 * stream in the real schema before the job completes, as a real worker does.
 * Everything the coordinator sees is what real workers produce.
 */
export class InstantWorkers {
  private readonly workers: InstantWorker[] = [];

  constructor(private readonly options: InstantWorkersOptions) {}

  /** derivations taken from the queues so far */
  get taken(): number {
    return this.workers.reduce((sum, w) => sum + w.taken, 0);
  }

  /** when the first derivation was taken (performance.now() of this process), if one was */
  get firstTakenAt(): number | undefined {
    const times = this.workers.map((w) => w.firstTakenAt).filter((t): t is number => t !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  async start(): Promise<void> {
    for (let i = 0; i < this.options.count; i++) {
      const worker = new InstantWorker(`instant-${i + 1}`, this.options);
      await worker.start();
      this.workers.push(worker);
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
  }
}

class InstantWorker {
  taken = 0;
  firstTakenAt: number | undefined;
  private readonly redis: Redis;
  private readonly publisher: WorkerEventPublisher;
  private readonly consumers = new Map<string, BullWorker>();
  private readonly ineligible = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private discovery: NodeJS.Timeout | undefined;
  private discovering = false;
  private readonly startedAt = Date.now();

  constructor(
    private readonly name: string,
    private readonly options: InstantWorkersOptions,
  ) {
    this.redis = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
    this.publisher = new WorkerEventPublisher(this.redis, options.signer.newSession());
  }

  private info(): WorkerInfo {
    return {
      name: this.name,
      ...CAPABILITIES,
      maxJobs: this.options.slots,
      speedFactor: 1,
      running: 0,
      heartbeatAt: Date.now(),
      startedAt: this.startedAt,
      host: os.hostname(),
      publicKeyFingerprint: 'SHA256:instant-worker',
      nixVersion: 'nix-store (Nix) 0 (instant bench worker)',
    };
  }

  async start(): Promise<void> {
    await this.tick();
    // A heartbeat, and frequent looks for queues that appeared.
    this.timer = setInterval(() => void this.tick().catch((error: unknown) => this.options.logger.warn({ err: error }, 'instant worker tick failed')), TICK_MS);
    this.discovery = setInterval(
      () => void this.discover().catch((error: unknown) => this.options.logger.warn({ err: error }, 'instant worker queue discovery failed')),
      DISCOVER_MS,
    );
  }

  private async tick(): Promise<void> {
    await this.redis.multi().sadd(redisKeys.workers, this.name).set(redisKeys.worker(this.name), JSON.stringify(this.info())).exec();
    await this.discover();
  }

  /** Starts consuming the queues that appeared (the coordinator creates them on first use) and that this worker may serve. */
  private async discover(): Promise<void> {
    // One look at a time: two would both start a consumer for a new queue.
    if (this.discovering) return;
    this.discovering = true;
    try {
      if (this.consumers.size + this.ineligible.size < (await this.redis.scard(redisKeys.queues))) await this.consumeNewQueues();
    } finally {
      this.discovering = false;
    }
  }

  private async consumeNewQueues(): Promise<void> {
    for (const queue of await this.redis.smembers(redisKeys.queues)) {
      if (this.consumers.has(queue) || this.ineligible.has(queue)) continue;
      if (!canBuild(CAPABILITIES, parseQueueName(queue))) {
        this.ineligible.add(queue);
        continue;
      }
      // BullMQ's own processing loop: the next job comes back with each completion, one round trip a job.
      const consumer = new BullWorker(queue, (job) => this.build(job), {
        connection: this.redis.duplicate(),
        prefix: this.options.bullmqPrefix,
        concurrency: this.options.slots,
        name: this.name,
      });
      consumer.on('error', (error) => this.options.logger.warn({ err: error, queue }, 'instant worker queue error'));
      this.consumers.set(queue, consumer);
    }
  }

  /** What a real worker reports around a build, with the build itself taking no time. */
  private async build(job: Job): Promise<{ outcome: 'succeeded' }> {
    this.taken++;
    this.firstTakenAt ??= performance.now();
    const build = buildJobSchema.parse(job.data);
    const common = { drvPath: build.drvPath, worker: this.name, jobId: String(job.id), attempt: job.attemptsStarted ?? 0 };
    await this.publisher.publish({ type: 'started', ...common, at: Date.now() });
    await this.publisher.publish({
      type: 'finished',
      ...common,
      outcome: 'succeeded',
      outputs: build.outputs,
      exitCode: 0,
      logTail: [],
      timings: ZERO_TIMINGS,
      at: Date.now(),
    });
    return { outcome: 'succeeded' };
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.discovery !== undefined) clearInterval(this.discovery);
    await Promise.all([...this.consumers.values()].map((c) => c.close()));
    await removeWorker(this.redis, this.name);
    this.redis.disconnect();
  }
}
