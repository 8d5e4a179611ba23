import type { Redis } from 'ioredis';
import { redisKeys, type Logger } from '@nixfarm/shared';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { BuildDispatcher } from '../dispatch/build-dispatcher.js';
import { LOCAL_BUILDER_NAME } from '../local/local-builder.js';
import type { RunFinalizer } from './run-finalizer.js';

export interface RunResumeDeps {
  /** the set of unfinished runs */
  redis: Pick<Redis, 'smembers'>;
  graph: Pick<DerivationGraph, 'queuedInRun' | 'runningInRunOn' | 'requeue' | 'run'>;
  dispatcher: Pick<BuildDispatcher, 'restore' | 'buildsLocally'>;
  finalizer: Pick<RunFinalizer, 'finalize'>;
  logger: Logger;
}

/** Picks unfinished runs up again: at start, and periodically as a safety net. */
export class RunResume {
  constructor(private readonly deps: RunResumeDeps) {}

  /**
   * Every queued derivation of an unfinished run is put back in BullMQ (a
   * no-op where the job survived) or handed to the local builder. After a
   * restart (`afterRestart`), local builds the previous process was running
   * died with it: they are queued again. Workers' builds need nothing: their
   * jobs' locks expire and another worker takes them; their reports wait in
   * the stream. A run with nothing left is ended.
   */
  async resume(options: { afterRestart?: boolean } = {}): Promise<number> {
    const { graph, dispatcher, finalizer, redis, logger } = this.deps;
    const active = await redis.smembers(redisKeys.activeRuns);
    for (const runId of active) {
      const ready = await graph.queuedInRun(runId);
      if (dispatcher.buildsLocally && options.afterRestart) {
        for (const hash of await graph.runningInRunOn(runId, LOCAL_BUILDER_NAME)) {
          const again = await graph.requeue(hash, 'the coordinator restarted during this local build');
          if (again === undefined) continue;
          logger.info({ runId, drvPath: again.job.drvPath }, 'local build interrupted by a restart; building it again');
          ready.push(again);
        }
      }
      await dispatcher.restore(ready);
      const { remaining } = await graph.run(runId, ['remaining']);
      if ((remaining ?? 0) <= 0) await finalizer.finalize(runId);
    }
    return active.length;
  }
}
