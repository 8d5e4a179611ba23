import type { RunEvent } from '@nixfarm/shared';
import type { DerivationGraph, ReadyDerivation } from '../graph/derivation-graph.js';
import type { LocalBuilder } from '../local/local-builder.js';
import type { BuildQueues } from './build-queues.js';
import type { WorkerDirectory } from './worker-directory.js';
import { unsupportedReason, whyNoWorker, type WorkerRefusal } from './no-worker-reason.js';

/** Where the dispatcher tells runs what became of their derivations: the run event stream (runs/run-events.ts). */
export interface DispatchEventSink {
  emitAll(deliveries: Iterable<{ runIds: Iterable<string>; event: RunEvent }>): Promise<void>;
}

export interface BuildDispatcherDeps {
  queues: Pick<BuildQueues, 'enqueue'>;
  /** the registry of workers: who is alive and what each can build */
  workers: Pick<WorkerDirectory, 'list'>;
  graph: Pick<DerivationGraph, 'runsOfAll' | 'markAllUnsupported'>;
  events: DispatchEventSink;
  /** builds preferLocalBuild derivations here; absent when turned off */
  localBuilder?: Pick<LocalBuilder, 'takes' | 'submit'>;
}

/** What submissions and reports need of the dispatcher: hand over what became ready. */
export type BuildDispatch = Pick<BuildDispatcher, 'dispatch'>;

/**
 * Where a ready derivation goes: to the coordinator's local builder, to the
 * BullMQ queue of its system and features, or nowhere because no live worker
 * can build it (it ends unsupported, with each worker's reason).
 */
export class BuildDispatcher {
  constructor(private readonly deps: BuildDispatcherDeps) {}

  /** Whether some derivations are built on the coordinator itself. */
  get buildsLocally(): boolean {
    return this.deps.localBuilder !== undefined;
  }

  /**
   * Dispatches ready derivations (many at once: one addBulk per queue, one
   * read of the worker registry, one round trip for their runs and one for
   * their events) and says at once which no live worker can ever take.
   */
  async dispatch(all: readonly ReadyDerivation[]): Promise<void> {
    if (all.length === 0) return;
    const { queues, workers, graph, events } = this.deps;
    const ready = this.startLocal(all);
    if (ready.length === 0) return;
    const [, registry, runIds] = await Promise.all([queues.enqueue(ready), workers.list(), graph.runsOfAll(ready.map((r) => r.hash))]);
    const at = Date.now();
    const alive = registry.filter((w) => w.alive);
    const explained = new Map<string, WorkerRefusal[] | undefined>();
    const deliveries: Array<{ runIds: string[]; event: RunEvent }> = [];
    const unsupported: Array<{ hash: string; reason: string }> = [];
    for (const r of ready) {
      const runs = runIds.get(r.hash) ?? [];
      deliveries.push({ runIds: runs, event: { type: 'drv-queued', drvPath: r.job.drvPath, queue: r.queue, at } });
      // Say at once when no live worker can ever take it, instead of leaving the client waiting silently.
      if (!explained.has(r.queue)) explained.set(r.queue, whyNoWorker(alive, r.job));
      const refusals = explained.get(r.queue);
      if (refusals === undefined) continue;
      unsupported.push({ hash: r.hash, reason: unsupportedReason(r.job, refusals) });
      deliveries.push({
        runIds: runs,
        event: { type: 'drv-unsupported', drvPath: r.job.drvPath, system: r.job.system, requiredFeatures: r.job.requiredFeatures, workers: refusals, at },
      });
    }
    await Promise.all([graph.markAllUnsupported(unsupported), events.emitAll(deliveries)]);
  }

  /**
   * Puts derivations the graph already holds as queued back where they run,
   * silently: re-adding a job BullMQ still has is a no-op. For resuming runs.
   */
  async restore(ready: readonly ReadyDerivation[]): Promise<void> {
    await this.deps.queues.enqueue(this.startLocal(ready));
  }

  /** Starts the local builds now (they never wait for a worker); returns the rest. */
  private startLocal(all: readonly ReadyDerivation[]): readonly ReadyDerivation[] {
    const local = this.deps.localBuilder;
    if (local === undefined) return all;
    for (const r of all) if (local.takes(r)) local.submit(r);
    return all.filter((r) => !local.takes(r));
  }
}
