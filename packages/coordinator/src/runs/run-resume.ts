import type { Redis } from 'ioredis';
import { redisKeys, type Logger } from '@nixfarm/shared';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { BuildDispatcher } from '../dispatch/build-dispatcher.js';
import { LOCAL_BUILDER_NAME } from '../local/local-builder.js';
import type { RunFinalizer } from './run-finalizer.js';
import type { RunAttributes } from './run-attributes.js';

/** Why a jobset run whose evaluation died with the previous coordinator process ends failed. */
export const EVALUATION_LOST =
  'the coordinator restarted while it evaluated this jobset, and the evaluation died with it: the attributes evaluated before still build; submit the jobset again for the rest';

export interface RunResumeDeps {
  /** the set of unfinished runs */
  redis: Pick<Redis, 'smembers'>;
  graph: Pick<DerivationGraph, 'queuedInRun' | 'runningInRunOn' | 'requeue' | 'run' | 'closeRun'>;
  /** jobset runs' evaluation state: an evaluation is held by the process that started it */
  attributes: Pick<RunAttributes, 'progress' | 'end'>;
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
   * the stream. A jobset run still evaluating after a restart lost its
   * evaluation (it lived in the previous process): its evaluation ends
   * failed, saying so, and the run is closed, so it never waits forever. A
   * run with nothing left is ended.
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
      await dispatcher.restore(ready, runId);
      if (options.afterRestart && (await this.deps.attributes.progress(runId))?.state === 'evaluating') {
        await this.deps.attributes.end(runId, { state: 'failed', error: EVALUATION_LOST }, Date.now());
        logger.warn({ runId }, 'jobset evaluation lost in a restart; the run is closed with what was evaluated');
        await graph.closeRun(runId);
      }
      const { remaining } = await graph.run(runId, ['remaining']);
      if ((remaining ?? 0) <= 0) await finalizer.finalize(runId);
    }
    return active.length;
  }
}
