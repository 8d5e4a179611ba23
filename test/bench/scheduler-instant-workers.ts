import os from 'node:os';
import { Redis } from 'ioredis';
import { JobFetcher, WorkerEventPublisher, type FetchedJob } from '@nixfarm/worker';
import { buildJobSchema, redisKeys, type Logger, type WorkerCapabilities, type WorkerInfo } from '@nixfarm/shared';

export interface InstantWorkersOptions {
  redisUrl: string;
  count: number;
  /** jobs each worker holds at once (its max-jobs) */
  slots: number;
  logger: Logger;
}

const CAPABILITIES = { systems: ['x86_64-linux'], supportedFeatures: ['big-parallel', 'kvm'], mandatoryFeatures: [] as string[] } satisfies WorkerCapabilities;
const HEARTBEAT_MS = 2000;
const ZERO_TIMINGS = { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 };

/**
 * Workers whose builds take no time: each registers and heartbeats in the
 * worker registry like a real one, takes jobs from the BullMQ queues through
 * the worker package's own JobFetcher, reports `started` and `finished`
 * (succeeded, with the job's outputs) on the worker-event stream in the real
 * schema, and completes the job. Everything the coordinator sees is real.
 */
export class InstantWorkers {
  private readonly workers: InstantWorker[] = [];

  constructor(private readonly options: InstantWorkersOptions) {}

  /** derivations taken from the queues so far */
  get taken(): number {
    return this.workers.reduce((sum, w) => sum + w.taken, 0);
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
  private readonly redis: Redis;
  private readonly fetcher: JobFetcher;
  private readonly publisher: WorkerEventPublisher;
  private readonly running = new Set<Promise<void>>();
  private slotFreed: (() => void) | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  private stopping = false;
  private readonly startedAt = Date.now();

  constructor(
    private readonly name: string,
    private readonly options: InstantWorkersOptions,
  ) {
    this.redis = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
    this.publisher = new WorkerEventPublisher(this.redis);
    this.fetcher = new JobFetcher({
      redis: this.redis,
      subscriber: this.redis.duplicate(),
      capabilities: CAPABILITIES,
      workerName: name,
      logger: options.logger,
      lockDurationMs: 30_000,
    });
  }

  private info(): WorkerInfo {
    return {
      name: this.name,
      ...CAPABILITIES,
      maxJobs: this.options.slots,
      speedFactor: 1,
      running: this.running.size,
      heartbeatAt: Date.now(),
      startedAt: this.startedAt,
      host: os.hostname(),
      publicKeyFingerprint: 'SHA256:instant-worker',
      nixVersion: 'nix-store (Nix) 0 (instant bench worker)',
    };
  }

  private async beat(): Promise<void> {
    await this.redis.multi().sadd(redisKeys.workers, this.name).set(redisKeys.worker(this.name), JSON.stringify(this.info())).exec();
  }

  async start(): Promise<void> {
    await this.beat();
    this.heartbeat = setInterval(() => void this.beat().catch(() => undefined), HEARTBEAT_MS);
    await this.fetcher.start();
    this.loop = this.fetchLoop();
  }

  private async fetchLoop(): Promise<void> {
    while (!this.stopping) {
      if (this.running.size >= this.options.slots) {
        await new Promise<void>((resolve) => (this.slotFreed = resolve));
        continue;
      }
      const fetched = await this.fetcher.fetch();
      if (fetched === undefined) {
        await this.fetcher.idle();
        await this.fetcher.refreshQueues();
        continue;
      }
      this.taken++;
      const task = this.complete(fetched)
        .catch((error: unknown) => this.options.logger.error({ err: error, jobId: fetched.job.id }, 'instant build failed to report'))
        .finally(() => {
          this.running.delete(task);
          const freed = this.slotFreed;
          this.slotFreed = undefined;
          freed?.();
        });
      this.running.add(task);
    }
  }

  /** What a real worker reports around a build, with the build itself taking no time. */
  private async complete({ job, token }: FetchedJob): Promise<void> {
    const build = buildJobSchema.parse(job.data);
    const common = { drvPath: build.drvPath, worker: this.name, jobId: String(job.id), attempt: job.attemptsStarted ?? 0 };
    await this.publisher.publish({ type: 'started', ...common, at: Date.now() });
    await this.publisher.publish({ type: 'finished', ...common, outcome: 'succeeded', outputs: build.outputs, exitCode: 0, logTail: [], timings: ZERO_TIMINGS, at: Date.now() });
    await job.moveToCompleted({ outcome: 'succeeded' }, token, false);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.fetcher.wakeUp();
    this.slotFreed?.();
    await this.loop;
    await Promise.allSettled([...this.running]);
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    await this.fetcher.close();
    await this.redis.multi().srem(redisKeys.workers, this.name).del(redisKeys.worker(this.name)).exec();
    this.redis.disconnect();
  }
}
