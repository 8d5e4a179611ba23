import path from 'node:path';
import { Queue, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { bullmqOptions, hashPart, type Logger, type UploadRecord, type UploadSummary } from '@nixfarm/shared';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';
import { BackgroundQueueWorker } from '../queues/background-queue-worker.js';
import { S3Cache } from './s3-cache.js';
import { UploadRecords } from './upload-records.js';
import { parseUploadTarget, type UploadTarget } from './upload-target.js';
import type { FarmMetrics, UploadBacklog } from '../metrics/farm-metrics.js';

export interface UploadQueueOptions {
  /** BullMQ needs maxRetriesPerRequest: null; the worker gets a duplicate of its own */
  redis: Redis;
  logger: Logger;
  nix: Pick<CoordinatorNix, 'copyTo' | 'closure'>;
  /** S3 caches are staged in subdirectories of this one */
  stagingDir: string;
  /** uploads at once, over all caches */
  concurrency: number;
  /** attempts per upload before it is given up (default 12: with the back-off, about 2 hours at a 1 s base) */
  attempts?: number;
  /** the first retry's delay; each next one doubles it */
  backoffMs?: number;
  /** the caches of --push-to: where a succeeded run's outputs go */
  targets: readonly UploadTarget[];
  /** counts attempts by cache and result; reads the backlog at each scrape */
  metrics?: Pick<FarmMetrics, 'uploadAttempted' | 'watchUploads'>;
}

interface UploadJobData {
  path: string;
  /** the cache URL: a job names its cache, so a push to a cache not in --push-to survives a restart too */
  target: string;
}

/** BullMQ queue names may not hold `:`. */
const QUEUE_NAME = 'nixfarm-uploads';

/**
 * Uploads to external caches, in a durable queue of their own: one job per
 * (output, cache), retried with exponential back-off, run by this
 * coordinator with its own concurrency. Builds never wait on it: finishing a
 * run only adds jobs. Each upload copies the output's closure with its
 * signatures (`nix copy`; for S3, staged then put with the AWS SDK).
 */
export class UploadQueue {
  private readonly queue: Queue<UploadJobData>;
  private worker: BackgroundQueueWorker<UploadJobData> | undefined;
  private readonly records: UploadRecords;
  private readonly s3: S3Cache;
  private readonly attempts: number;

  constructor(private readonly options: UploadQueueOptions) {
    this.queue = new Queue(QUEUE_NAME, bullmqOptions(options.redis));
    this.records = new UploadRecords(options.redis);
    this.s3 = new S3Cache({ nix: options.nix, stagingDir: options.stagingDir });
    this.attempts = options.attempts ?? 12;
    options.metrics?.watchUploads(() => this.backlog());
  }

  start(): void {
    this.worker = new BackgroundQueueWorker<UploadJobData>(
      { redis: this.options.redis, queue: QUEUE_NAME, concurrency: this.options.concurrency, logger: this.options.logger, what: 'upload queue' },
      (job) => this.process(job),
    );
  }

  /** A run built these outputs: they go to the --push-to caches and to those its request named. */
  async runBuilt(runId: string, outputPaths: readonly string[], pushTo: readonly string[]): Promise<void> {
    const targets = new Map(this.options.targets.map((t) => [t.id, t]));
    for (const target of pushTo.map(parseUploadTarget)) targets.set(target.id, target);
    await this.enqueue(runId, outputPaths, [...targets.values()]);
  }

  /**
   * Queues each output's upload to each cache, for this run. An output a
   * cache has from an earlier run is only linked to this one, unless `again`
   * (an explicit push: the cache may have lost it; Nix skips what is there);
   * one given up before is tried afresh.
   */
  async enqueue(runId: string, outputPaths: readonly string[], targets: readonly UploadTarget[], again = false): Promise<void> {
    for (const target of targets) {
      for (const outputPath of outputPaths) {
        const jobId = `${target.id}-${hashPart(outputPath)}`;
        const known = await this.records.get(jobId);
        if (known?.state === 'uploaded' && !again) {
          await this.records.link(runId, jobId);
          continue;
        }
        if (known === undefined || known.state === 'given-up' || known.state === 'uploaded') {
          await this.records.put(jobId, { path: outputPath, target: target.url, state: 'pending', attempts: 0, queuedAt: Date.now() }, runId);
        } else await this.records.link(runId, jobId);
        // The same job id while one is queued is a no-op: one upload per (output, cache), whichever runs asked.
        await this.queue.add(
          'upload',
          { path: outputPath, target: target.url },
          {
            jobId,
            attempts: this.attempts,
            backoff: { type: 'exponential', delay: this.options.backoffMs ?? 1000 },
            removeOnComplete: true,
            removeOnFail: true,
          },
        );
      }
    }
  }

  ofRun(runId: string): Promise<UploadRecord[]> {
    return this.records.ofRun(runId);
  }

  /** The dashboard's panel: the backlog and the latest failing uploads. */
  async summary(failing = 10): Promise<UploadSummary> {
    const [backlog, failed] = await Promise.all([this.backlog(), this.records.failing(failing)]);
    return { ...backlog, failing: failed };
  }

  async backlog(): Promise<UploadBacklog> {
    const counts = await this.queue.getJobCounts('waiting', 'delayed', 'active', 'prioritized');
    const depth = Object.values(counts).reduce((a, b) => a + b, 0);
    if (depth === 0) return { depth, lagSeconds: 0 };
    let oldest = Date.now();
    for (const type of ['waiting', 'delayed', 'active'] as const) {
      for (const job of await this.queue.getJobs([type], 0, 0, true)) oldest = Math.min(oldest, job.timestamp);
    }
    return { depth, lagSeconds: Math.max(0, Date.now() - oldest) / 1000 };
  }

  private async process(job: Job<UploadJobData>): Promise<void> {
    const { logger, metrics } = this.options;
    const jobId = job.id ?? '';
    const target = parseUploadTarget(job.data.target);
    const attempt = job.attemptsMade + 1;
    const record = (await this.records.get(jobId)) ?? { path: job.data.path, target: target.url, state: 'pending', attempts: 0, queuedAt: job.timestamp };
    const started = Date.now();
    try {
      if (target.kind === 's3') await this.s3.upload(target, job.data.path);
      else await this.options.nix.copyTo(target.url, [job.data.path]);
    } catch (error) {
      const last = attempt >= this.attempts;
      const reason = error instanceof Error ? error.message : String(error);
      const message = `upload of ${job.data.path} to ${target.url} failed (attempt ${attempt} of ${this.attempts}${last ? ', given up: `nixfarm push RUN --to URL` tries again' : ', retried with back-off'}): ${reason}`;
      await this.records.put(jobId, { ...record, state: last ? 'given-up' : 'retrying', attempts: attempt, error: message });
      metrics?.uploadAttempted(target.url, last ? 'given-up' : 'failed');
      logger.warn({ path: job.data.path, target: target.url, attempt, last }, message);
      throw error;
    }
    const { error: _, ...rest } = record;
    await this.records.put(jobId, { ...rest, state: 'uploaded', attempts: attempt, uploadedAt: Date.now() });
    metrics?.uploadAttempted(target.url, 'uploaded');
    logger.info({ path: job.data.path, target: target.url, attempt, ms: Date.now() - started }, 'uploaded');
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.queue.close();
    this.s3.close();
  }
}

/** Where a coordinator stages S3 uploads: under its state dir. */
export function uploadStagingDir(stateDir: string): string {
  return path.join(stateDir, 'upload-staging');
}
