import { Queue, UnrecoverableError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { bullmqOptions, imageTag, parseImageRepository, type ImagePublication, type Logger, type SubmitRunRequest } from '@nixfarm/shared';
import { BackgroundQueueWorker } from '../queues/background-queue-worker.js';
import { detectImage } from './image-detector.js';
import { ImagePublisher, ImagePushError } from './image-publisher.js';
import { ImagePublications } from './image-publications.js';
import { checkRegistryAuthFile } from './registry-auth-file.js';

/** BullMQ queue names may not hold ':'. */
const QUEUE = 'nixfarm-image-publish';

interface PublishJob {
  runId: string;
  index: number;
  attr: string;
  outputPath: string;
  repository: string;
  tags: string[];
  authFile?: string;
  insecure: boolean;
}

/** The options of a run that asks for images, as the request gives them. */
type PublishRequest = Pick<SubmitRunRequest, 'publishImages' | 'registryAuth' | 'registryInsecure' | 'tagLatest'>;

export interface ImagePublishQueueOptions {
  redis: Redis;
  logger: Logger;
  /** tries per image before it is failed for good (default 6) */
  attempts?: number;
  /** the first retry's delay; each next one doubles (default 5 s) */
  backoffMs?: number;
  publisher?: ImagePublisher;
}

/**
 * Publishing images off the build path: when a run ends, each requested
 * output becomes a job in its own durable queue, which one background worker
 * on the coordinator (it has the outputs in its store) takes. A registry that
 * is down is retried with exponential back-off; no build ever waits on it.
 * Each output's state is recorded for the API as it changes.
 */
export class ImagePublishQueue {
  readonly publications: ImagePublications;
  private readonly queue: Queue<PublishJob>;
  private worker: BackgroundQueueWorker<PublishJob> | undefined;
  private readonly publisher: ImagePublisher;

  constructor(private readonly options: ImagePublishQueueOptions) {
    this.publications = new ImagePublications(options.redis);
    this.queue = new Queue<PublishJob>(QUEUE, bullmqOptions(options.redis));
    this.publisher = options.publisher ?? new ImagePublisher();
  }

  /** At submission: a credentials file that cannot serve is refused before anything is built. */
  async checkRequest(request: PublishRequest): Promise<void> {
    if (request.publishImages === undefined || request.registryAuth === undefined) return;
    await checkRegistryAuthFile(request.registryAuth, parseImageRepository(request.publishImages).registry);
  }

  /**
   * Queues one publication per output of a run that asked for images. An
   * output that has settled keeps its state; one still pending is queued
   * again, which is a no-op while its job exists (the job id is the output's)
   * and recovers one whose queueing a restart cut off.
   */
  async enqueueRun(runId: string, request: PublishRequest, outputs: ReadonlyArray<{ attr: string; outputPath: string }>): Promise<void> {
    if (request.publishImages === undefined) return;
    const repository = parseImageRepository(request.publishImages).reference;
    const attempts = this.options.attempts ?? 6;
    for (const [index, { attr, outputPath }] of outputs.entries()) {
      const tags = [imageTag(attr, outputPath), ...(request.tagLatest === true ? ['latest'] : [])];
      const recorded = await this.publications.open(runId, index, {
        attr,
        outputPath,
        state: 'pending',
        references: tags.map((t) => `${repository}:${t}`),
        attempts: 0,
      });
      if (recorded.state !== 'pending') continue;
      const data: PublishJob = {
        runId,
        index,
        attr,
        outputPath,
        repository,
        tags,
        insecure: request.registryInsecure === true,
        ...(request.registryAuth === undefined ? {} : { authFile: request.registryAuth }),
      };
      await this.queue.add('publish', data, {
        jobId: `${runId}-${index}`,
        attempts,
        backoff: { type: 'exponential', delay: this.options.backoffMs ?? 5000 },
        removeOnComplete: true,
        removeOnFail: true,
      });
    }
  }

  start(): void {
    this.worker = new BackgroundQueueWorker<PublishJob>(
      { redis: this.options.redis, queue: QUEUE, concurrency: 2, logger: this.options.logger, what: 'image publish' },
      (job) => this.process(job),
    );
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.queue.close();
  }

  private async process(job: Job<PublishJob>): Promise<void> {
    const { runId, index, attr, outputPath, repository, tags } = job.data;
    const logger = this.options.logger.child({ runId, attr, outputPath, repository });
    const base = { attr, outputPath, references: tags.map((t) => `${repository}:${t}`), attempts: job.attemptsMade + 1 };
    const detection = await detectImage(outputPath).catch((error: unknown) => ({ kind: 'malformed' as const, problem: `${outputPath}: ${String(error)}` }));
    if (detection.kind === 'not-an-image') {
      await this.publications.set(runId, index, { ...base, state: 'not-an-image', references: [] });
      logger.info('output is not an image: not published');
      return;
    }
    const settle = async (publication: ImagePublication) => this.publications.set(runId, index, publication);
    if (detection.kind === 'malformed') {
      await settle({ ...base, state: 'failed', error: `not a valid image: ${detection.problem}` });
      throw new UnrecoverableError(detection.problem);
    }
    try {
      const digest = await this.publisher.push(detection.image, {
        repository: parseImageRepository(repository),
        tags,
        insecure: job.data.insecure,
        ...(job.data.authFile === undefined ? {} : { authFile: job.data.authFile }),
      });
      await settle({ ...base, state: 'published', digest });
      logger.info({ digest, tags }, 'image published');
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const last = !(error instanceof ImagePushError && error.retryable) || base.attempts >= (job.opts.attempts ?? 1);
      await settle({ ...base, state: last ? 'failed' : 'pending', error: last && base.attempts > 1 ? `${message} (after ${base.attempts} tries)` : message });
      logger.warn({ err: message, attempt: base.attempts, last }, last ? 'image publish failed' : 'image publish failed; retrying');
      throw last ? new UnrecoverableError(message) : error;
    }
  }
}
