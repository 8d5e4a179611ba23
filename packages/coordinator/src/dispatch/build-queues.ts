import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { queuePriority, queuedJobId, redisKeys, type Logger } from '@nixfarm/shared';
import type { ReadyDerivation } from '../graph/derivation-graph.js';

export interface BuildQueuesOptions {
  redis: Redis;
  logger: Logger;
  /** told of each job queued (its id, queue, and when it becomes takeable) and of each removed: feeds the queue-wait metrics in memory */
  waits?: { queued(jobs: ReadonlyArray<{ jobId: string; queue: string; since: number }>): void; take(jobId: string): unknown };
}

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
      queue = new Queue(name, { connection: this.options.redis });
      this.queues.set(name, queue);
    }
    return queue;
  }

  async enqueue(ready: readonly ReadyDerivation[]): Promise<void> {
    if (ready.length === 0) return;
    const byQueue = new Map<string, ReadyDerivation[]>();
    for (const r of ready) {
      const list = byQueue.get(r.queue);
      if (list === undefined) byQueue.set(r.queue, [r]);
      else list.push(r);
    }
    for (const [name, items] of byQueue) {
      if (!this.known.has(name)) {
        await this.options.redis.sadd(redisKeys.queues, name);
        this.known.add(name);
      }
      const now = Date.now();
      await this.queue(name).addBulk(
        items.map((r) => ({
          name: r.job.name,
          data: r.job,
          opts: {
            jobId: queuedJobId(r.hash, r.attempt),
            delay: r.delayMs,
            priority: queuePriority(r.priority, r.criticalPathMs),
            removeOnComplete: true,
            removeOnFail: true,
          },
        })),
      );
      this.options.waits?.queued(items.map((r) => ({ jobId: queuedJobId(r.hash, r.attempt), queue: name, since: now + (r.delayMs ?? 0) })));
      await this.options.redis.publish(redisKeys.queueWakeups, name);
      this.options.logger.debug({ queue: name, count: items.length }, 'queued derivations');
    }
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
