import { randomUUID } from 'node:crypto';
import { Queue, Worker as BullWorker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  bullmqOptions,
  canBuild,
  isCheckQueueName,
  parseCheckQueueName,
  parseQueueName,
  redisKeys,
  type Logger,
  type WorkerCapabilities,
} from '@nixfarm/shared';
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
  /** sampled checks are taken only once this worker has taken no real work for this long (ms; default 1000) */
  sampleAfterIdleMs?: number;
  /** leaves a job to a better-placed idle worker (Nix's speed-factor rule); absent: take whatever comes */
  gate?: PlacementGate;
}

const DEFAULT_SAMPLE_AFTER_IDLE_MS = 1000;

/** What a queue holds: builds, checks a run asked for, or the coordinator's sampled (background) checks. */
type QueueKind = 'build' | 'check' | 'sampled-check';

export interface FetchedJob {
  job: Job;
  token: string;
  queue: string;
  kind: 'build' | 'check';
  /** a sampled check: it yields to any real work (FarmWorker hands it back when real work waits) */
  background: boolean;
}

interface ServedQueue {
  kind: QueueKind;
  /** for counts and the heads of its lists (on the shared connection, not the fetch connection) */
  counter: Queue;
}

/**
 * The connection jobs are taken through, and the BullMQ Workers on it: a
 * restart (the watchdog's) replaces the whole generation, so a connection
 * that stopped answering is no longer waited on.
 */
interface FetchGeneration {
  connection: Redis;
  workers: Map<string, BullWorker>;
  /** settles a pass under way with nothing, when this generation is replaced */
  abandoned: Promise<undefined>;
  abandon: () => void;
}

/** Why the watchdog restarted the fetch loop, as it logs it. */
export interface FetchStall {
  /** since the last fetch pass ended (or the loop last had no reason to fetch), ms */
  stalledMs: number;
  /** jobs waiting per served queue that has some */
  waiting: Record<string, number>;
  /** what was seen, for the log */
  reason: string;
}

/**
 * Pulls jobs from every queue this worker may serve under Nix's rule, build
 * queues and check queues alike (a check queue that names this worker as
 * the builder to exclude is never served). Sampled checks are the lowest
 * priority: a pass takes one only when no build or requested check was
 * there for this worker. BullMQ
 * Workers are used in manual mode: we decide when a slot is free, so
 * max-jobs holds across all queues at once. The coordinator publishes a
 * wake-up when it queues work, so idle workers react at once; a slow poll
 * covers missed messages.
 */
export class JobFetcher {
  private readonly queues = new Map<string, ServedQueue>();
  /** set when the last pass left work to a better worker: poll again soon rather than idle long */
  private yielded = false;
  private readonly ineligible = new Set<string>();
  private wake: (() => void) | undefined;
  /** a wake-up came while no idle() waited (mid-pass, or while the slots were full): the next idle() returns at once */
  private wakePending = false;
  private rotation = 0;
  private sampledRotation = 0;
  /** when this worker last took a build or a requested check: sampled checks wait until it has been idle a while */
  private lastRealWorkAt = 0;
  /** the last pass left sampled checks for later (the worker took real work too recently): poll again soon */
  private samplesDeferred = false;
  private closed = false;
  private generation: FetchGeneration | undefined;
  /** replaced generations, kept for the jobs taken through them (their locks, their completion) until close() */
  private readonly retired: FetchGeneration[] = [];
  /** when the last fetch pass ended: the watchdog's measure of a loop that stopped */
  private lastPassEndedAt = Date.now();
  private restartCount = 0;
  /** when the fetch connection last answered (a PING of the watchdog's, or a pass that ended) */
  private lastAnswerAt = Date.now();

  constructor(private readonly options: JobFetcherOptions) {}

  /** The generation fetches go through, made at first use. */
  private get current(): FetchGeneration {
    this.generation ??= this.newGeneration();
    return this.generation;
  }

  /** Times the watchdog restarted fetching since this worker started (its heartbeat advertises it). */
  get restarts(): number {
    return this.restartCount;
  }

  /** When the last fetch pass ended; the loop calls fetchNotNeeded() while it has no reason to fetch (slots full, paused). */
  get lastFetchAt(): number {
    return this.lastPassEndedAt;
  }

  /**
   * How long the fetch connection has not answered (0 when it answers a PING
   * within timeoutMs). With every slot taken no fetch shows it alive, yet the
   * running jobs renew their locks and complete through it.
   */
  async fetchConnectionSilentMs(timeoutMs: number): Promise<number> {
    const generation = this.current;
    const answered = await answersPing(generation.connection, timeoutMs);
    if (generation !== this.generation) return 0;
    if (answered) this.lastAnswerAt = Date.now();
    return answered ? 0 : Date.now() - this.lastAnswerAt;
  }

  /** The loop had no reason to fetch until now: the stall clock starts again. */
  fetchNotNeeded(): void {
    this.lastPassEndedAt = Date.now();
  }

  private newGeneration(): FetchGeneration {
    let abandon: () => void = () => undefined;
    const abandoned = new Promise<undefined>((resolve) => (abandon = () => resolve(undefined)));
    // A connection of its own: a stall on it (a socket left on a failed-over primary) leaves the shared one free to count and report.
    // Named, so an operator sees it in CLIENT LIST (and a test can find it).
    const connection = this.options.redis.duplicate({ connectionName: `nixfarm-fetch-${this.options.workerName}` });
    connection.on('error', (err) => this.options.logger.debug({ err }, 'fetch connection error'));
    return { connection, workers: new Map(), abandoned, abandon };
  }

  private workerFor(name: string): BullWorker {
    const existing = this.current.workers.get(name);
    if (existing !== undefined) return existing;
    const worker = new BullWorker(name, null, {
      ...bullmqOptions(this.current.connection),
      autorun: false,
      name: this.options.workerName,
      lockDuration: this.options.lockDurationMs,
      stalledInterval: Math.max(1000, this.options.lockDurationMs),
      // A build that outlives a lost lock is retried by the coordinator's rules, not dropped by BullMQ's.
      maxStalledCount: 1000,
    });
    worker.on('error', (err) => this.options.logger.warn({ err, queue: name }, 'queue worker error'));
    void worker.startStalledCheckTimer();
    this.current.workers.set(name, worker);
    return worker;
  }

  /**
   * Jobs waiting in the served queues (BullMQ's wait list and prioritized
   * set), counted on the shared connection, which the fetch does not use.
   */
  async waitingJobs(): Promise<Record<string, number>> {
    const waiting: Record<string, number> = {};
    for (const [name, served] of this.queues) {
      const [wait, prioritized] = await Promise.all([
        this.options.redis.llen(served.counter.keys.wait!),
        this.options.redis.zcard(served.counter.keys.prioritized!),
      ]);
      if (wait + prioritized > 0) waiting[name] = wait + prioritized;
    }
    return waiting;
  }

  /**
   * Starts fetching afresh: a new connection and new BullMQ Workers; a pass
   * under way on the old ones is abandoned (what it may still take, its lock
   * expires and BullMQ's stalled check returns). The old connection stays for
   * the builds taken through it, unless it does not answer a PING: then
   * nothing on it can succeed, and it is closed so they fail and free
   * their slots instead of hanging.
   */
  restart(stall: FetchStall): void {
    this.restartCount++;
    this.options.logger.warn(
      { stalledSeconds: Math.round(stall.stalledMs / 1000), waiting: stall.waiting, restarts: this.restartCount, reason: stall.reason },
      `fetch loop stalled: ${stall.reason}; restarting it on a new connection`,
    );
    const old = this.current;
    this.generation = this.newGeneration();
    this.retired.push(old);
    old.abandon();
    this.lastPassEndedAt = this.lastAnswerAt = Date.now();
    void answersPing(old.connection, 2000).then((answered) => {
      if (answered) return;
      this.options.logger.warn('the stalled fetch connection does not answer PING; closing it');
      old.connection.disconnect();
      // disconnect() only half-closes: a peer that no longer answers would keep the socket, and its commands, forever.
      (old.connection as unknown as { stream?: { destroy(): void } }).stream?.destroy();
    });
    this.wakeUp();
  }

  async start(): Promise<void> {
    await this.refreshQueues();
    // Its own channel too: a job released by its own build (it holds the input) is offered to it first.
    await this.options.subscriber.subscribe(redisKeys.queueWakeups, redisKeys.workerWakeups(this.options.workerName));
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
      const wake = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(
        () => {
          // A later idle() (this one lost a race with a freed slot) has its own wake: keep it.
          if (this.wake === wake) this.wake = undefined;
          resolve();
        },
        this.yielded || this.samplesDeferred ? 200 : (this.options.idlePollMs ?? 1000),
      );
      this.wake = wake;
    });
  }

  async refreshQueues(): Promise<void> {
    const [builds, checks] = await Promise.all([this.options.redis.smembers(redisKeys.queues), this.options.redis.smembers(redisKeys.checkQueues)]);
    for (const name of [...builds, ...checks]) {
      if (this.queues.has(name) || this.ineligible.has(name)) continue;
      const kind = this.kindIfEligible(name);
      if (kind === undefined) {
        this.ineligible.add(name);
        continue;
      }
      this.workerFor(name);
      this.queues.set(name, { kind, counter: new Queue(name, bullmqOptions(this.options.redis)) });
      this.options.logger.info({ queue: name, kind }, 'serving queue');
    }
  }

  /** What the queue holds, if this worker may serve it: Nix's rule, and a check never on the worker that built the outputs. */
  private kindIfEligible(name: string): QueueKind | undefined {
    try {
      if (!isCheckQueueName(name)) return canBuild(this.options.capabilities, parseQueueName(name)) ? 'build' : undefined;
      const check = parseCheckQueueName(name);
      if (check.excludedWorker === this.options.workerName || !canBuild(this.options.capabilities, check.requirement)) return undefined;
      return check.background ? 'sampled-check' : 'check';
    } catch {
      return undefined;
    }
  }

  /**
   * Whether real work (a build, or a check a run asked for) waits in a queue
   * this worker serves: one count per such queue, stopping at the first that
   * has some. For deciding to give a running background check back.
   */
  async realWorkWaiting(): Promise<boolean> {
    for (const served of this.queues.values()) {
      if (served.kind === 'sampled-check') continue;
      if ((await served.counter.getJobCountByTypes('waiting', 'prioritized')) > 0) return true;
    }
    return false;
  }

  /**
   * One non-blocking pass over the served queues: builds and requested
   * checks first, starting at a rotating offset so no queue starves another;
   * sampled checks only when that found nothing, nor left work to a better
   * worker (that work waits, and a background check taken now would only be
   * given back for it).
   */
  async fetch(): Promise<FetchedJob | undefined> {
    if (this.closed) return undefined;
    // No queue, no generation yet: nothing to abandon (and no connection to open for nothing).
    const generation = this.queues.size === 0 ? undefined : this.current;
    const pass = this.pass();
    let fetched: FetchedJob | undefined;
    try {
      fetched = await Promise.race([pass, ...(generation === undefined ? [] : [generation.abandoned])]);
    } finally {
      // A pass that failed also ended: the loop is alive, and retries it.
      if (generation === this.generation) this.lastPassEndedAt = this.lastAnswerAt = Date.now();
    }
    if (generation !== this.generation) {
      void pass.then(
        (late) => {
          if (late !== undefined)
            this.options.logger.warn(
              { jobId: late.job.id, queue: late.queue },
              'an abandoned fetch took a job after all; its lock expires and it goes back to its queue',
            );
        },
        () => undefined,
      );
      return undefined;
    }
    return fetched;
  }

  private async pass(): Promise<FetchedJob | undefined> {
    const entries = [...this.queues.entries()];
    const real = entries.filter(([, q]) => q.kind !== 'sampled-check');
    // This pass sees what was queued before it; a wake-up from now on is for work it may miss.
    this.wakePending = false;
    this.yielded = false;
    this.samplesDeferred = false;
    for (let i = 0; i < real.length; i++) {
      const [queue, served] = real[(this.rotation + i) % real.length]!;
      // The gate compares workers for builds; checks are few and bound to no better worker.
      if (this.options.gate !== undefined && served.kind === 'build') {
        // The heads of the waiting list and of the prioritized set: what getNextJob takes next.
        const decision = await this.options.gate.decide(queue, async () => served.counter.getRanges(['waiting', 'prioritized'], 0, 0, true));
        if (!decision.take) {
          this.yielded = true;
          continue;
        }
      }
      const fetched = await this.take(queue, served);
      if (fetched !== undefined) {
        this.rotation = (this.rotation + i + 1) % Math.max(1, real.length);
        this.lastRealWorkAt = Date.now();
        return fetched;
      }
    }
    if (this.yielded) return undefined;
    // A run between two of its builds leaves a worker idle for milliseconds: a sample taken then would only be handed back.
    if (Date.now() - this.lastRealWorkAt < (this.options.sampleAfterIdleMs ?? DEFAULT_SAMPLE_AFTER_IDLE_MS)) {
      this.samplesDeferred = true;
      return undefined;
    }
    const sampled = entries.filter(([, q]) => q.kind === 'sampled-check');
    for (let i = 0; i < sampled.length; i++) {
      const [queue, served] = sampled[(this.sampledRotation + i) % sampled.length]!;
      const fetched = await this.take(queue, served);
      if (fetched !== undefined) {
        this.sampledRotation = (this.sampledRotation + i + 1) % sampled.length;
        return fetched;
      }
    }
    return undefined;
  }

  private async take(queue: string, served: ServedQueue): Promise<FetchedJob | undefined> {
    const token = randomUUID();
    const job = (await this.workerFor(queue).getNextJob(token, { block: false })) as Job | undefined;
    if (job === undefined || job === null) return undefined;
    return { job, token, queue, kind: served.kind === 'build' ? 'build' : 'check', background: served.kind === 'sampled-check' };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wakeUp();
    await this.options.subscriber.quit().catch(() => undefined);
    for (const generation of [...this.retired, ...(this.generation === undefined ? [] : [this.generation])]) {
      generation.abandon();
      await Promise.all([...generation.workers.values()].map((w) => w.close(true).catch(() => undefined)));
      generation.connection.disconnect();
    }
    await Promise.all([...this.queues.values()].map((q) => q.counter.close().catch(() => undefined)));
  }
}

/** Whether a connection answers a PING within timeoutMs (an error reply or none in time: it does not). */
function answersPing(connection: Redis, timeoutMs: number): Promise<boolean> {
  return Promise.race([
    connection.ping().then(
      () => true,
      () => false,
    ),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref()),
  ]);
}
