import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  bullmqOptions,
  canBuild,
  checkJobId,
  checkQueueNameFor,
  hashOfQueuedJobId,
  readWorkerRegistry,
  redisKeys,
  takesNewBuilds,
  type BuildRequirement,
  type CheckJob,
  type Logger,
  type WorkerListing,
} from '@nixfarm/shared';
import { LOCAL_BUILDER_NAME } from '../local/local-builder.js';
import type { CheckRecord } from './check-records.js';

export interface CheckQueuesOptions {
  redis: Redis;
  logger: Logger;
}

/** Where a check went, and why there when that is not the rule. */
export interface CheckPlacement {
  queue: string;
  jobId: string;
  excludedWorker?: string;
  note?: string;
}

/**
 * Puts checks in their queues (shared/queue-name.ts: check@… asked for by a
 * run, check-sampled@… for background samples) with the worker that built
 * the coordinator's copy excluded, so the rebuild happens elsewhere. When no
 * other live worker can build it, the builder may take it, and the record
 * says so: a rebuild on the same machine still finds time stamps and
 * randomness, and a farm with one machine per system gets checks at all.
 */
export class CheckQueues {
  private readonly queues = new Map<string, Queue>();
  private readonly known = new Set<string>();

  constructor(private readonly options: CheckQueuesOptions) {}

  /** Queues checks, each with its builder excluded where another live worker can build it (one read of the registry for all). */
  async enqueueAll(items: ReadonlyArray<{ record: CheckRecord; job: CheckJob }>): Promise<CheckPlacement[]> {
    if (items.length === 0) return [];
    const workers = await this.capableWorkers();
    const placements: CheckPlacement[] = [];
    for (const { record, job } of items) placements.push(await this.enqueue(record, job, workers));
    return placements;
  }

  /** Takes a check's job out of its queue; one already running is stopped on its worker. */
  async remove(record: CheckRecord): Promise<void> {
    if (record.queue === undefined || record.jobId === undefined) return;
    const removed = await this.queue(record.queue)
      .remove(record.jobId)
      .catch(() => 0);
    // The worker knows a running job by the hash its id names, as for builds.
    if (removed === 0) await this.options.redis.publish(redisKeys.cancelBuilds, hashOfQueuedJobId(record.jobId));
  }

  /** The hashes of queued checks that exclude their builder although no other live worker can take them now. */
  async stranded(records: readonly CheckRecord[]): Promise<Set<string>> {
    const excluding = records.filter((r) => r.excludedWorker !== undefined);
    if (excluding.length === 0) return new Set();
    const workers = await this.capableWorkers();
    return new Set(excluding.filter((r) => this.placement(r, workers).excludedWorker === undefined).map((r) => r.hash));
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close().catch(() => undefined)));
  }

  private async enqueue(record: CheckRecord, job: CheckJob, workers: readonly WorkerListing[]): Promise<CheckPlacement> {
    const { redis } = this.options;
    const placement = this.placement(record, workers);
    const queue = checkQueueNameFor({ requirement: requirementOf(record), background: record.background, ...placement });
    if (!this.known.has(queue)) {
      await redis.sadd(redisKeys.checkQueues, queue);
      this.known.add(queue);
    }
    const jobId = checkJobId(record.hash, record.attempts);
    await this.queue(queue).add(record.job.name, job, {
      jobId,
      ...(record.background ? {} : { priority: record.priority }),
      removeOnComplete: true,
      removeOnFail: true,
    });
    await redis.publish(redisKeys.queueWakeups, queue);
    return { queue, jobId, ...placement };
  }

  /** The live workers that take new builds: who may check. */
  private async capableWorkers(): Promise<WorkerListing[]> {
    return (await readWorkerRegistry(this.options.redis)).filter((w) => w.alive && takesNewBuilds(w));
  }

  private placement(record: CheckRecord, workers: readonly WorkerListing[]): { excludedWorker?: string; note?: string } {
    const builder = record.builder;
    if (builder === undefined || builder === LOCAL_BUILDER_NAME) return {};
    const requirement = requirementOf(record);
    const capable = workers.filter((w) => canBuild(w, requirement));
    if (capable.some((w) => w.name !== builder)) return { excludedWorker: builder };
    const system = [requirement.system, ...requirement.requiredFeatures].join(' with ');
    if (capable.length === 0) return { note: `no live worker can build ${system} now: the first that can takes the check` };
    this.options.logger.info({ builder, system }, 'no other worker can build this: checking it on the machine that built it');
    return { note: `no other live worker can build ${system}: checked on ${builder}, the machine that built it` };
  }

  private queue(name: string): Queue {
    let queue = this.queues.get(name);
    if (queue === undefined) {
      queue = new Queue(name, bullmqOptions(this.options.redis));
      this.queues.set(name, queue);
    }
    return queue;
  }
}

function requirementOf(record: CheckRecord): BuildRequirement {
  return { system: record.job.system, requiredFeatures: record.job.requiredFeatures };
}
