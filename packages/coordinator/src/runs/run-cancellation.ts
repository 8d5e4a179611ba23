import type { Redis } from 'ioredis';
import { redisKeys, type Logger, type RunView } from '@nixfarm/shared';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { BuildQueues } from '../dispatch/build-queues.js';
import type { BuildDispatcher } from '../dispatch/build-dispatcher.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import type { RunEvents } from './run-events.js';
import type { GcRoots } from './gc-roots.js';
import type { RunQueries } from './run-queries.js';

export interface RunCancellationDeps {
  graph: Pick<DerivationGraph, 'cancelRun' | 'views' | 'nodes'>;
  /** where queued builds leave their queues */
  queues: Pick<BuildQueues, 'remove'>;
  /** gives the cancelled run's slots to the runs beside it (fair shares) */
  dispatcher?: Pick<BuildDispatcher, 'cancelled'>;
  /** publishes the hashes whose running builds workers stop */
  redis: Pick<Redis, 'publish'>;
  events: Pick<RunEvents, 'emit' | 'emitAll'>;
  gcRoots: Pick<GcRoots, 'releaseRun'>;
  queries: Pick<RunQueries, 'get'>;
  logger: Logger;
  /** counts runs ended (in memory) */
  metrics?: Pick<FarmMetrics, 'runFinished'>;
  /** the run's reproducibility checks no other run needs leave their queues */
  checks?: { cancelRun(runId: string): Promise<void> };
}

/**
 * Cancels a run: its queued builds leave their queues, its running builds
 * are stopped on their workers, except where another running run needs them.
 */
export class RunCancellation {
  constructor(private readonly deps: RunCancellationDeps) {}

  async cancel(runId: string): Promise<RunView> {
    const { graph, queues, redis, events, gcRoots, queries, logger } = this.deps;
    await queries.get(runId);
    const cancelled = await graph.cancelRun(runId);
    if (cancelled === undefined) return queries.get(runId);
    const views = await graph.views(cancelled.map((c) => c.hash));
    for (const [i, c] of cancelled.entries()) {
      const view = views[i];
      if (c.was === 'running') await redis.publish(redisKeys.cancelBuilds, c.hash);
      else if (c.was === 'queued' && view !== undefined) {
        const queue = (await graph.nodes.read(c.hash, ['queue']))?.queue ?? '';
        if (queue !== '') await queues.remove(queue, c.hash, view.attempts);
      }
    }
    await this.deps.dispatcher?.cancelled(runId);
    await this.deps.checks?.cancelRun(runId);
    const now = Date.now();
    await events.emitAll(
      views.map((view) => ({ runIds: [runId], event: { type: 'drv-finished' as const, drvPath: view.drvPath, status: 'cancelled' as const, at: now } })),
    );
    await gcRoots.releaseRun(runId);
    await events.emit([runId], { type: 'run-finished', runId, status: 'cancelled', at: now });
    this.deps.metrics?.runFinished('cancelled');
    logger.info({ runId, cancelled: cancelled.length, stopped: cancelled.filter((c) => c.was === 'running').length }, 'run cancelled');
    return queries.get(runId);
  }
}
