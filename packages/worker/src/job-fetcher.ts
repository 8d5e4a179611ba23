import { randomUUID } from 'node:crypto';
import { Queue, Worker as BullWorker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { canBuild, parseQueueName, redisKeys, type Logger, type WorkerCapabilities } from '@nixfarm/shared';
import type { PlacementGate } from './placement-gate.js';

export interface JobFetcherOptions {
  redis: Redis;
  /** a connection of its own, for SUBSCRIBE */
  subscriber: Redis;
  capabilities: WorkerCapabilities;
  workerName: string;
  logger: Logger;
  lockDurationMs: number;
  /** how long an idle worker waits for a wake-up before polling again */
  idlePollMs?: number;
  /** leaves a job to a better-placed idle worker (Nix's speed-factor rule); absent: take whatever comes */
  gate?: PlacementGate;
}

export interface FetchedJob {
  job: Job;
  token: string;
  queue: string;
}

/**
 * Pulls jobs from every queue this worker may serve under Nix's rule. BullMQ
 * Workers are used in manual mode: we decide when a slot is free, so
 * max-jobs holds across all queues at once. The coordinator publishes a
 * wake-up when it queues work, so idle workers react at once; a slow poll
 * covers missed messages.
 */
export class JobFetcher {
  private readonly queues = new Map<string, BullWorker>();
  private readonly counters = new Map<string, Queue>();
  /** set when the last pass left work to a better worker: poll again soon rather than idle long */
  private yielded = false;
  private readonly ineligible = new Set<string>();
  private wake: (() => void) | undefined;
  /** a wake-up came while no idle() waited (mid-pass, or while the slots were full): the next idle() returns at once */
  private wakePending = false;
  private rotation = 0;
  private closed = false;

  constructor(private readonly options: JobFetcherOptions) {}

  async start(): Promise<void> {
    await this.refreshQueues();
    await this.options.subscriber.subscribe(redisKeys.queueWakeups);
    this.options.subscriber.on('message', (_channel: string, queue: string) => {
      if (this.ineligible.has(queue)) return;
      // New work was queued on a report, and a worker advertises its load before it reports: a view read before now may be stale.
      this.options.gate?.forgetView();
      if (!this.queues.has(queue)) void this.refreshQueues().then(() => this.wakeUp());
      else this.wakeUp();
    });
  }

  wakeUp(): void {
    const wake = this.wake;
    this.wake = undefined;
    if (wake === undefined) this.wakePending = true;
    wake?.();
  }

  /** Resolves after a wake-up or the idle poll interval, whichever comes first; at once if a wake-up came since the last pass began. */
  async idle(): Promise<void> {
    if (this.wakePending) {
      this.wakePending = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(
        () => {
          this.wake = undefined;
          resolve();
        },
        this.yielded ? 200 : (this.options.idlePollMs ?? 1000),
      );
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  async refreshQueues(): Promise<void> {
    const names = await this.options.redis.smembers(redisKeys.queues);
    for (const name of names) {
      if (this.queues.has(name) || this.ineligible.has(name)) continue;
      let eligible = false;
      try {
        eligible = canBuild(this.options.capabilities, parseQueueName(name));
      } catch {
        eligible = false;
      }
      if (!eligible) {
        this.ineligible.add(name);
        continue;
      }
      const worker = new BullWorker(name, null, {
        connection: this.options.redis,
        autorun: false,
        name: this.options.workerName,
        lockDuration: this.options.lockDurationMs,
        stalledInterval: Math.max(1000, this.options.lockDurationMs),
        // A build that outlives a lost lock is retried by the coordinator's rules, not dropped by BullMQ's.
        maxStalledCount: 1000,
      });
      worker.on('error', (err) => this.options.logger.warn({ err, queue: name }, 'queue worker error'));
      void worker.startStalledCheckTimer();
      this.queues.set(name, worker);
      this.counters.set(name, new Queue(name, { connection: this.options.redis }));
      this.options.logger.info({ queue: name }, 'serving queue');
    }
  }

  /** One non-blocking pass over the served queues, starting at a rotating offset so no queue starves another. */
  async fetch(): Promise<FetchedJob | undefined> {
    if (this.closed) return undefined;
    const entries = [...this.queues.entries()];
    // This pass sees what was queued before it; a wake-up from now on is for work it may miss.
    this.wakePending = false;
    this.yielded = false;
    for (let i = 0; i < entries.length; i++) {
      const [queue, worker] = entries[(this.rotation + i) % entries.length]!;
      if (this.options.gate !== undefined) {
        const counter = this.counters.get(queue)!;
        // The heads of the waiting list and of the prioritized set: what getNextJob takes next.
        const decision = await this.options.gate.decide(queue, async () => counter.getRanges(['waiting', 'prioritized'], 0, 0, true));
        if (!decision.take) {
          this.yielded = true;
          continue;
        }
      }
      const token = randomUUID();
      const job = (await worker.getNextJob(token, { block: false })) as Job | undefined;
      if (job !== undefined && job !== null) {
        this.rotation = (this.rotation + i + 1) % Math.max(1, entries.length);
        return { job, token, queue };
      }
    }
    return undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wakeUp();
    await this.options.subscriber.quit().catch(() => undefined);
    await Promise.all([...this.queues.values()].map((w) => w.close(true).catch(() => undefined)));
    await Promise.all([...this.counters.values()].map((q) => q.close().catch(() => undefined)));
  }
}
