import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { bullmqOptions, type Logger } from '@nixfarm/shared';

export interface BackgroundQueueWorkerOptions {
  /** the coordinator's connection: the worker makes a blocking one of its own from it */
  redis: Redis;
  queue: string;
  concurrency: number;
  logger: Logger;
  /** what the queue does, for its log lines ("image publish", "upload") */
  what: string;
}

/**
 * Works a coordinator-side BullMQ queue (image publishing, uploads) in the
 * background, off the build path, on a Redis connection of its own. BullMQ
 * never closes a connection it is given: close() does, or a stopped
 * coordinator's process would stay alive.
 */
export class BackgroundQueueWorker<T> {
  private readonly connection: Redis;
  private readonly worker: Worker<T>;

  constructor(options: BackgroundQueueWorkerOptions, process: (job: Job<T>) => Promise<void>) {
    this.connection = options.redis.duplicate();
    this.worker = new Worker<T>(options.queue, process, { ...bullmqOptions(this.connection), concurrency: options.concurrency });
    this.worker.on('error', (error) => options.logger.warn({ err: error }, `${options.what} worker error`));
  }

  async close(): Promise<void> {
    await this.worker.close();
    this.connection.disconnect();
  }
}
