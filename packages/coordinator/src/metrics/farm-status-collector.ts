import type { Redis } from 'ioredis';
import {
  canBuild,
  parseQueueName,
  redisKeys,
  takesNewBuilds,
  type EvaluatingRun,
  type FarmStatus,
  type Logger,
  type QueueStatus,
  type WorkerListing,
} from '@nixfarm/shared';
import type { BuildQueues } from '../dispatch/build-queues.js';
import type { WorkerDirectory } from '../dispatch/worker-directory.js';
import type { QueueWaitTracker } from './queue-wait-tracker.js';
import { scalingSignal } from './scaling-signal.js';

export interface FarmStatusCollectorOptions {
  redis: Redis;
  queues: BuildQueues;
  workers: WorkerDirectory;
  queueWaits: QueueWaitTracker;
  /** the jobset runs evaluating now */
  runs: { evaluating(): Promise<EvaluatingRun[]> };
  logger: Logger;
}

/**
 * One snapshot of the farm, for both GET /metrics and GET /api/status so the
 * two never disagree: queue depths (one round trip per queue), the worker
 * registry (one), active runs (one, then one per active run for those still
 * evaluating), and the scaling signal computed from them.
 */
export class FarmStatusCollector {
  constructor(private readonly options: FarmStatusCollectorOptions) {}

  async collect(): Promise<FarmStatus> {
    return (await this.collectWithRegistry()).status;
  }

  /** The snapshot and the worker registry it was made from, for a reader that needs more of each worker than the status shows (the dashboard). */
  async collectWithRegistry(): Promise<{ status: FarmStatus; registry: WorkerListing[] }> {
    const { redis, queues, workers, queueWaits, runs, logger } = this.options;
    const names = await queues.names();
    const [counts, registry, activeRuns, evaluating] = await Promise.all([
      Promise.all(names.map((name) => queues.queue(name).getJobCounts('waiting', 'prioritized', 'delayed', 'active'))),
      workers.list(),
      redis.scard(redisKeys.activeRuns),
      runs.evaluating(),
    ]);
    const now = Date.now();
    const oldest = queueWaits.oldest(now);
    const queueStatuses: QueueStatus[] = [];
    const takers = registry.filter((w) => w.alive && takesNewBuilds(w));
    names.forEach((name, i) => {
      let requirement;
      try {
        requirement = parseQueueName(name);
      } catch (error) {
        logger.warn({ queue: name, err: error }, 'not a build queue name: left out of the status');
        return;
      }
      const c = counts[i]!;
      const waiting = (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0);
      if (waiting === 0) queueWaits.forgetQueue(name);
      const since = waiting === 0 ? undefined : oldest.get(name);
      queueStatuses.push({
        name,
        system: requirement.system,
        features: [...requirement.requiredFeatures],
        waiting,
        running: c.active ?? 0,
        oldestWaitSeconds: since === undefined ? 0 : Math.max(0, now - since) / 1000,
        liveWorkers: takers.filter((w) => canBuild(w, requirement)).length,
      });
    });
    const scaling = scalingSignal(
      queueStatuses.map((q) => ({ name: q.name, system: q.system, requiredFeatures: q.features, waiting: q.waiting })),
      registry.map((w) => ({ ...w, takesNewBuilds: takesNewBuilds(w) })),
    );
    const status: FarmStatus = {
      at: now,
      queues: queueStatuses,
      workers: registry.map((w) => ({
        name: w.name,
        up: w.alive,
        systems: w.systems,
        running: w.running,
        maxJobs: w.maxJobs,
        draining: w.draining === true,
        ...(w.paused === undefined ? {} : { paused: w.paused }),
        heartbeatAgeSeconds: Math.max(0, now - w.heartbeatAt) / 1000,
        ...(w.freeDiskBytes === undefined ? {} : { freeDiskBytes: w.freeDiskBytes }),
        ...(w.fetchRestarts === undefined ? {} : { fetchRestarts: w.fetchRestarts }),
      })),
      scaling,
      activeRuns,
      evaluating,
    };
    return { status, registry };
  }
}
