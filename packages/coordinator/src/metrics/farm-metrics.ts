import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, exponentialBuckets } from 'prom-client';
import type { BuildTimings, FarmStatus } from '@nixfarm/shared';
import { QueueWaitTracker } from './queue-wait-tracker.js';
import type { RedisMemory } from './redis-memory.js';

/** Seconds, from a trivial derivation's copy to a long compile. */
const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200];

/** Bytes: 1 KiB to 16 GiB, by fours. */
const BYTE_BUCKETS = exponentialBuckets(1024, 4, 13);

/** A finished build as the metrics see it. */
export interface FinishedBuild {
  status: string;
  /** absent from older workers' reports */
  system?: string;
  timings: BuildTimings;
}

/** The upload queue at a scrape: uploads not done yet, and how long the oldest has waited. */
export interface UploadBacklog {
  depth: number;
  lagSeconds: number;
}

/**
 * A read several gauges of one scrape share: prom-client collects every
 * gauge at once, so callers while a read is in flight get that read instead
 * of asking Redis again.
 */
function sharedRead<T>(read: () => Promise<T>): () => Promise<T> {
  let inFlight: Promise<T> | undefined;
  return () =>
    (inFlight ??= read().finally(() => {
      inFlight = undefined;
    }));
}

/**
 * The coordinator's Prometheus metrics, on a registry of its own (two
 * coordinators in one process, as in tests, never share counters). Counters
 * and histograms are plain in-memory increments on the path that applies
 * worker reports; gauges are set from one status snapshot per scrape.
 */
export class FarmMetrics {
  readonly registry = new Registry();
  readonly queueWaits = new QueueWaitTracker();

  private readonly finished: Counter<'status' | 'system'>;
  private readonly runsStarted: Counter;
  private readonly runsFinished: Counter<'status'>;
  private readonly buildSeconds: Histogram<'system'>;
  private readonly totalSeconds: Histogram<'system'>;
  private readonly copyInSeconds: Histogram<'system'>;
  private readonly copyOutSeconds: Histogram<'system'>;
  private readonly copyInBytes: Histogram<'system'>;
  private readonly copyOutBytes: Histogram<'system'>;
  private readonly queueWaitSeconds: Histogram<'queue'>;
  private readonly uploads: Counter<'target' | 'result'>;
  /** read at each scrape; the upload queue sets it when it starts */
  private uploadBacklog: () => Promise<UploadBacklog> = async () => ({ depth: 0, lagSeconds: 0 });
  private readonly checks: Counter<'result' | 'kind'>;
  private checksPending: () => Promise<number> = async () => 0;
  /** read at each scrape; the coordinator points it at its Redis */
  private redisMemory: () => Promise<RedisMemory> = async () => ({ usedBytes: 0, maxBytes: 0 });
  private readonly signedOutputs: Counter;
  private readonly signingSeconds: Histogram;
  private readonly narinfoRequests: Counter<'result'>;
  private readonly narBytes: Counter;
  private readonly rejectedReports: Counter<'reason'>;
  private readonly gauges: {
    queueWaiting: Gauge<'queue' | 'system' | 'features'>;
    queueLiveWorkers: Gauge<'queue' | 'system' | 'features'>;
    queueRunning: Gauge<'queue' | 'system' | 'features'>;
    queueOldest: Gauge<'queue' | 'system' | 'features'>;
    workerRunning: Gauge<'worker'>;
    workerMaxJobs: Gauge<'worker'>;
    workerHeartbeatAge: Gauge<'worker'>;
    workerUp: Gauge<'worker'>;
    workerDraining: Gauge<'worker'>;
    workerPaused: Gauge<'worker'>;
    workerFreeDisk: Gauge<'worker'>;
    workerFetchRestarts: Gauge<'worker'>;
    workersNeeded: Gauge<'system'>;
    unserved: Gauge<'system'>;
    freeSlots: Gauge<'system'>;
    activeRuns: Gauge;
  };

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'nixfarm_coordinator_' });
    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]) => new Counter<L>({ name, help, labelNames, registers });
    const histogram = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
      new Histogram<L>({ name, help, labelNames, buckets: DURATION_BUCKETS, registers });
    const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[]) => new Gauge<L>({ name, help, labelNames, registers });
    this.finished = counter('nixfarm_derivations_finished_total', 'Derivations ended by a worker report, by terminal status and system', ['status', 'system']);
    this.runsStarted = counter('nixfarm_runs_started_total', 'Runs submitted', []);
    this.runsFinished = counter('nixfarm_runs_finished_total', 'Runs ended, by status', ['status']);
    this.buildSeconds = histogram(
      'nixfarm_build_duration_seconds',
      'Time in the builder (one BuildDerivation request on a serve session), per finished build',
      ['system'],
    );
    this.totalSeconds = histogram('nixfarm_build_total_seconds', 'Time from a worker taking a build to its report: copy in, build, copy out', ['system']);
    this.copyInSeconds = histogram('nixfarm_build_copy_in_seconds', "Time copying a build's inputs into the worker's store", ['system']);
    this.copyOutSeconds = histogram('nixfarm_build_copy_out_seconds', "Time copying a build's outputs to the coordinator's store", ['system']);
    this.copyInBytes = new Histogram({
      name: 'nixfarm_build_copy_in_bytes',
      help: "Bytes a build's own copy-in streamed (NARs plus metadata; inputs already there or brought by another build count 0)",
      labelNames: ['system'],
      buckets: BYTE_BUCKETS,
      registers,
    });
    this.copyOutBytes = new Histogram({
      name: 'nixfarm_build_copy_out_bytes',
      help: "Bytes a build's copy-out streamed to the coordinator's store (NARs plus metadata)",
      labelNames: ['system'],
      buckets: BYTE_BUCKETS,
      registers,
    });
    this.queueWaitSeconds = histogram('nixfarm_queue_wait_seconds', 'Time from a job becoming takeable to a worker starting it', ['queue']);
    this.uploads = counter(
      'nixfarm_uploads_total',
      'Upload attempts of an output (with its closure) to an external cache, by cache and result (uploaded, failed, given-up)',
      ['target', 'result'],
    );
    // Gauges read from Redis when scraped: what they show survives a restart of the coordinator.
    const readOnScrape = (name: string, help: string, read: () => Promise<number>) =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          this.set(await read());
        },
      });
    readOnScrape(
      'nixfarm_upload_queue_depth',
      'Uploads to external caches not done yet: waiting, running, or waiting for their retry',
      async () => (await this.uploadBacklog()).depth,
    );
    readOnScrape(
      'nixfarm_upload_lag_seconds',
      'Age of the oldest upload to an external cache not done yet (0 when none waits)',
      async () => (await this.uploadBacklog()).lagSeconds,
    );
    this.checks = counter(
      'nixfarm_checks_total',
      'Reproducibility checks ended, by result (reproducible, not-reproducible, failed, skipped, cancelled) and kind (requested by a run, or sampled)',
      ['result', 'kind'],
    );
    readOnScrape('nixfarm_redis_memory_used_bytes', "Bytes Redis uses (INFO memory's used_memory)", async () => (await this.redisMemory()).usedBytes);
    readOnScrape(
      'nixfarm_redis_memory_max_bytes',
      "Redis's maxmemory: where it starts refusing writes (with BullMQ's noeviction policy); 0 when unlimited",
      async () => (await this.redisMemory()).maxBytes,
    );
    readOnScrape('nixfarm_checks_pending', 'Reproducibility checks not ended: waiting for their build, queued, or running', () => this.checksPending());
    this.rejectedReports = counter(
      'nixfarm_reports_rejected_total',
      "Worker reports dropped unapplied because they did not verify, by reason (signed-report.ts's REPORT_REJECTIONS)",
      ['reason'],
    );
    this.signedOutputs = counter('nixfarm_outputs_signed_total', "Outputs signed with the coordinator's key as they became valid in its store", []);
    this.signingSeconds = new Histogram({
      name: 'nixfarm_signing_seconds',
      help: 'Time signing one batch of outputs (one nix store sign process) and recording them for the binary cache',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.narinfoRequests = counter('nixfarm_cache_narinfo_requests_total', 'narinfo requests to the binary cache, by result (hit or miss)', ['result']);
    this.narBytes = counter('nixfarm_cache_nar_bytes_total', 'Compressed NAR bytes the binary cache sent', []);
    const q = ['queue', 'system', 'features'] as const;
    this.gauges = {
      queueWaiting: gauge('nixfarm_queue_waiting_jobs', 'Jobs waiting in a build queue (incl. prioritized and delayed retries)', q),
      queueLiveWorkers: gauge(
        'nixfarm_queue_live_workers',
        "Live workers (fresh heartbeat, not draining or paused) that may build a queue's jobs: 0 while jobs wait means none will be taken",
        q,
      ),
      queueRunning: gauge('nixfarm_queue_running_jobs', 'Jobs of a build queue a worker runs', q),
      queueOldest: gauge('nixfarm_queue_oldest_wait_seconds', 'Age of the oldest job of a queue no worker has started; 0 when none waits', q),
      workerRunning: gauge('nixfarm_worker_running_jobs', 'Builds a worker runs, as of its last heartbeat', ['worker']),
      workerMaxJobs: gauge('nixfarm_worker_max_jobs', 'Builds a worker runs at once at most', ['worker']),
      workerHeartbeatAge: gauge('nixfarm_worker_heartbeat_age_seconds', "Seconds since a worker's last heartbeat", ['worker']),
      workerUp: gauge('nixfarm_worker_up', '1 when the heartbeat is fresh (under 15 s), else 0', ['worker']),
      workerDraining: gauge('nixfarm_worker_draining', '1 while a worker drains (takes no new builds, then leaves)', ['worker']),
      workerPaused: gauge('nixfarm_worker_paused', '1 while a worker takes no new builds for now (e.g. low disk)', ['worker']),
      workerFreeDisk: gauge('nixfarm_worker_free_disk_bytes', "Free bytes on the filesystem of a worker's Nix store", ['worker']),
      workerFetchRestarts: gauge('nixfarm_worker_fetch_restarts', "Times a worker's fetch watchdog restarted its stalled fetch loop since the worker started", [
        'worker',
      ]),
      workersNeeded: gauge('nixfarm_workers_needed', 'More workers the waiting work of a system needs: ceil(unserved jobs / median max-jobs of its workers)', [
        'system',
      ]),
      unserved: gauge('nixfarm_unserved_jobs', 'Waiting jobs of a system that no free slot of a live capable worker can take', ['system']),
      freeSlots: gauge('nixfarm_free_slots', 'Free build slots of live workers that take new builds, per system they serve', ['system']),
      activeRuns: gauge('nixfarm_runs_active', 'Runs not finished yet', []),
    };
  }

  /** Builds that started: their queue wait, if this process queued them and the start counted. */
  buildsStarted(starts: ReadonlyArray<{ jobId: string; at: number; applied: boolean }>): void {
    for (const s of starts) {
      const queued = this.queueWaits.take(s.jobId);
      if (queued !== undefined && s.applied) this.queueWaitSeconds.observe({ queue: queued.queue }, Math.max(0, s.at - queued.since) / 1000);
    }
  }

  /** Builds this process has seen end, per status over all systems (the farm's history charts the same count /metrics exports). */
  async finishedByStatus(): Promise<Map<string, number>> {
    const totals = new Map<string, number>();
    for (const { labels, value } of (await this.finished.get()).values) {
      const status = String(labels.status ?? 'unknown');
      totals.set(status, (totals.get(status) ?? 0) + value);
    }
    return totals;
  }

  buildsFinished(builds: readonly FinishedBuild[]): void {
    for (const b of builds) {
      const system = b.system ?? 'unknown';
      this.finished.inc({ status: b.status, system });
      this.buildSeconds.observe({ system }, b.timings.buildMs / 1000);
      this.totalSeconds.observe({ system }, b.timings.totalMs / 1000);
      this.copyInSeconds.observe({ system }, b.timings.copyInMs / 1000);
      this.copyOutSeconds.observe({ system }, b.timings.copyOutMs / 1000);
      // An attempt that ended before a copy finished reports no bytes for it: no observation rather than a false 0.
      if (b.timings.copyInBytes !== undefined) this.copyInBytes.observe({ system }, b.timings.copyInBytes);
      if (b.timings.copyOutBytes !== undefined) this.copyOutBytes.observe({ system }, b.timings.copyOutBytes);
    }
  }

  checkEnded(result: string, background: boolean): void {
    this.checks.inc({ result, kind: background ? 'sampled' : 'requested' });
  }

  watchChecks(pending: () => Promise<number>): void {
    this.checksPending = pending;
  }

  /** Where the Redis memory gauges read from. */
  watchRedisMemory(read: () => Promise<RedisMemory>): void {
    // two gauges, one INFO a scrape
    this.redisMemory = sharedRead(read);
  }

  /** Where the upload gauges read the queue's backlog from. */
  watchUploads(backlog: () => Promise<UploadBacklog>): void {
    // two gauges, one read of the queue a scrape
    this.uploadBacklog = sharedRead(backlog);
  }

  uploadAttempted(target: string, result: 'uploaded' | 'failed' | 'given-up'): void {
    this.uploads.inc({ target, result });
  }

  outputsSigned(count: number, seconds: number): void {
    this.signedOutputs.inc(count);
    this.signingSeconds.observe(seconds);
  }

  reportRejected(reason: string): void {
    this.rejectedReports.inc({ reason });
  }

  narinfoServed(hit: boolean): void {
    this.narinfoRequests.inc({ result: hit ? 'hit' : 'miss' });
  }

  narBytesSent(bytes: number): void {
    this.narBytes.inc(bytes);
  }

  runStarted(): void {
    this.runsStarted.inc();
  }

  runFinished(status: string): void {
    this.runsFinished.inc({ status });
  }

  /** Sets every gauge from one snapshot; series of queues and workers that are gone disappear. */
  setStatus(status: FarmStatus): void {
    const g = this.gauges;
    for (const gauge of Object.values(g)) gauge.reset();
    for (const q of status.queues) {
      const labels = { queue: q.name, system: q.system, features: q.features.join(',') };
      g.queueWaiting.set(labels, q.waiting);
      g.queueLiveWorkers.set(labels, q.liveWorkers);
      g.queueRunning.set(labels, q.running);
      g.queueOldest.set(labels, q.oldestWaitSeconds);
    }
    for (const w of status.workers) {
      const worker = { worker: w.name };
      g.workerRunning.set(worker, w.running);
      g.workerMaxJobs.set(worker, w.maxJobs);
      g.workerHeartbeatAge.set(worker, w.heartbeatAgeSeconds);
      g.workerUp.set(worker, w.up ? 1 : 0);
      g.workerDraining.set(worker, w.draining ? 1 : 0);
      g.workerPaused.set(worker, w.paused === undefined ? 0 : 1);
      if (w.freeDiskBytes !== undefined) g.workerFreeDisk.set(worker, w.freeDiskBytes);
      if (w.fetchRestarts !== undefined) g.workerFetchRestarts.set(worker, w.fetchRestarts);
    }
    for (const s of status.scaling) {
      g.workersNeeded.set({ system: s.system }, s.workersNeeded);
      g.unserved.set({ system: s.system }, s.unserved);
      g.freeSlots.set({ system: s.system }, s.freeSlots);
    }
    g.activeRuns.set(status.activeRuns);
  }
}
