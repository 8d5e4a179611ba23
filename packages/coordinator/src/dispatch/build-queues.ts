import { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { bullmqOptions, queuePriority, queuedJobId, redisKeys, type Logger } from '@nixfarm/shared';
import type { ReadyDerivation } from '../graph/derivation-graph.js';
import type { Promotion } from './fair-share.js';

export interface BuildQueuesOptions {
  redis: Redis;
  logger: Logger;
  /** how long a job released by a worker's build is left to that worker before every worker is woken (ms, default 25) */
  localityGraceMs?: number;
  /** told of each job queued (its id, queue, and when it becomes takeable) and of each removed: feeds the queue-wait metrics in memory */
  waits?: { queued(jobs: ReadonlyArray<{ jobId: string; queue: string; since: number }>): void; take(jobId: string): unknown };
}

const DEFAULT_LOCALITY_GRACE_MS = 25;

/**
 * The ready queues, one BullMQ queue per (system, feature set). Job id is the
 * derivation's hash part, so a derivation is never queued twice. After adding,
 * a wake-up is published so idle workers fetch at once instead of polling.
 */
export class BuildQueues {
  private readonly queues = new Map<string, Queue>();
  private readonly known = new Set<string>();

  constructor(private readonly options: BuildQueuesOptions) {}

  queue(name: string): Queue {
    let queue = this.queues.get(name);
    if (queue === undefined) {
      queue = new Queue(name, bullmqOptions(this.options.redis));
      this.queues.set(name, queue);
    }
    return queue;
  }

  /** `priorities`: each job's BullMQ priority (the fair shares' choice); by default its run priority and critical path. */
  async enqueue(ready: readonly ReadyDerivation[], priorities?: readonly number[]): Promise<void> {
    if (ready.length === 0) return;
    const byQueue = new Map<string, Array<{ r: ReadyDerivation; priority: number }>>();
    ready.forEach((r, i) => {
      const item = { r, priority: priorities?.[i] ?? queuePriority(r.priority, r.criticalPathMs) };
      const list = byQueue.get(r.queue);
      if (list === undefined) byQueue.set(r.queue, [item]);
      else list.push(item);
    });
    for (const [name, items] of byQueue) {
      if (!this.known.has(name)) {
        await this.options.redis.sadd(redisKeys.queues, name);
        this.known.add(name);
      }
      const now = Date.now();
      await this.queue(name).addBulk(
        items.map(({ r, priority }) => ({
          name: r.job.name,
          data: r.job,
          opts: {
            jobId: queuedJobId(r.hash, r.attempt),
            delay: r.delayMs,
            priority,
            removeOnComplete: true,
            removeOnFail: true,
          },
        })),
      );
      this.options.waits?.queued(items.map(({ r }) => ({ jobId: queuedJobId(r.hash, r.attempt), queue: name, since: now + (r.delayMs ?? 0) })));
      await this.wake(name, items.length === 1 ? items[0]!.r.nearWorker : undefined);
      this.options.logger.debug({ queue: name, count: items.length }, 'queued derivations');
    }
  }

  /**
   * Wakes the workers of a queue. A lone job released by a worker's build
   * (the next link of a chain) goes to that worker first: it holds the input,
   * so its copy-in costs nothing, and its slot just freed. The others are
   * woken a moment later, so no job waits long on a worker that took other
   * work meanwhile. Several jobs at once wake everyone at once: they need
   * more than one worker.
   */
  private async wake(queue: string, nearWorker: string | undefined): Promise<void> {
    const { redis } = this.options;
    if (nearWorker === undefined) {
      await redis.publish(redisKeys.queueWakeups, queue);
      return;
    }
    await redis.publish(redisKeys.workerWakeups(nearWorker), queue);
    const everyone = setTimeout(() => {
      redis.publish(redisKeys.queueWakeups, queue).catch((error: unknown) => this.options.logger.warn({ err: error, queue }, 'waking the workers failed'));
    }, this.options.localityGraceMs ?? DEFAULT_LOCALITY_GRACE_MS);
    everyone.unref();
  }

  /**
   * Changes waiting jobs' priorities, in one round trip. A job taken or gone
   * meanwhile is no error: BullMQ only records the priority of an active job,
   * and a removed one needs none.
   */
  async promote(promotions: readonly Promotion[]): Promise<void> {
    await Promise.all(
      promotions.map(({ queue, jobId, priority }) =>
        new Job(this.queue(queue), 'promotion', undefined, {}, jobId).changePriority({ priority }).catch((error: unknown) => {
          this.options.logger.debug({ err: error, queue, jobId }, 'promotion of a job that left its queue skipped');
        }),
      ),
    );
  }

  /** Takes a derivation's waiting jobs out of its queue (every attempt's id); an active job is left to its worker. */
  async remove(queue: string, hash: string, attempts: number): Promise<void> {
    const q = this.queue(queue);
    for (let a = 0; a <= attempts; a++) {
      this.options.waits?.take(queuedJobId(hash, a));
      const job = await q.getJob(queuedJobId(hash, a));
      if (job !== undefined && !(await job.isActive())) await job.remove().catch(() => undefined);
    }
  }

  async names(): Promise<string[]> {
    return (await this.options.redis.smembers(redisKeys.queues)).sort();
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }
}
