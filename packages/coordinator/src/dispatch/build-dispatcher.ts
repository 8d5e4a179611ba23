import { canBuild, queuedJobId, takesNewBuilds, type Logger, type RunEvent, type WorkerListing } from '@nixfarm/shared';
import type { DerivationGraph, ReadyDerivation } from '../graph/derivation-graph.js';
import type { LocalBuilder } from '../local/local-builder.js';
import type { BuildQueues } from './build-queues.js';
import type { WorkerDirectory } from './worker-directory.js';
import { FairShare, type FairShareStanding } from './fair-share.js';
import { unsupportedReason, whyNoWorker, type WorkerRefusal } from './no-worker-reason.js';

/** Where the dispatcher tells runs what became of their derivations: the run event stream (runs/run-events.ts). */
export interface DispatchEventSink {
  emitAll(deliveries: Iterable<{ runIds: Iterable<string>; event: RunEvent }>): Promise<void>;
}

export interface BuildDispatcherDeps {
  queues: Pick<BuildQueues, 'enqueue' | 'promote'>;
  /** the registry of workers: who is alive and what each can build */
  workers: Pick<WorkerDirectory, 'list'>;
  /** the runs of each derivation, and a run's request (its share) */
  graph: Pick<DerivationGraph, 'runsOfAll' | 'markAllUnsupported' | 'run'>;
  events: DispatchEventSink;
  /** builds preferLocalBuild derivations here; absent when turned off */
  localBuilder?: Pick<LocalBuilder, 'takes' | 'submit'>;
  logger?: Logger;
}

/** What a report batch tells the dispatcher besides what became ready (see dispatch). */
export interface DispatchReport {
  ended?: Iterable<string>;
  runsOf?: ReadonlyMap<string, readonly string[]>;
}

/** What submissions need of the dispatcher: hand over what became ready. */
export type BuildDispatch = Pick<BuildDispatcher, 'dispatch' | 'reprioritize'>;

/** What reports need of it: hand over what became ready, and say which builds started, ended or came back (the fair shares count them). */
export type BuildReportSink = Pick<BuildDispatcher, 'dispatch' | 'started' | 'handedBack'>;

/**
 * Where a ready derivation goes: to the coordinator's local builder, to the
 * BullMQ queue of its system and features, or nowhere because no live worker
 * can build it (it ends unsupported, with each worker's reason).
 */
export class BuildDispatcher {
  private readonly fairShare = new FairShare();
  /** the registry as the last dispatch read it: whether a released job's near worker may take it at all */
  private lastRegistry: readonly WorkerListing[] = [];

  constructor(private readonly deps: BuildDispatcherDeps) {}

  /** Whether some derivations are built on the coordinator itself. */
  get buildsLocally(): boolean {
    return this.deps.localBuilder !== undefined;
  }

  /**
   * Dispatches ready derivations (many at once: one addBulk per queue, one
   * read of the worker registry, one round trip for their runs and one for
   * their events) and says at once which no live worker can ever take.
   * From a report batch: `ended`, the derivations whose builds ended in it
   * (runs that fall below their fair share with them get their best waiting
   * jobs promoted, after the released ones were placed), and `runsOf`, the
   * runs of released derivations where the build that released them had a
   * single run (a dependent's runs are among its input's): with every one
   * known, queueing does not wait for the registry and run reads.
   */
  async dispatch(all: readonly ReadyDerivation[], report: DispatchReport = {}): Promise<void> {
    this.fairShare.ended(report.ended ?? []);
    const ready = this.startLocal(all);
    if (ready.length === 0) {
      await this.promote();
      return;
    }
    const { queues, workers, graph, events } = this.deps;
    this.keepNearWorkersThatCanBuild(ready);
    const hashes = ready.map((r) => r.hash);
    const hints = report.runsOf;
    let registry: WorkerListing[];
    let runIds: Map<string, string[]>;
    if (hints !== undefined && ready.every((r) => hints.has(r.hash) && this.fairShare.knowsSlots(r.queue))) {
      // Slots as of the previous dispatch: a worker that came or went since counts from the next one.
      const priorities = await this.place(ready, hints);
      [, registry, runIds] = await Promise.all([queues.enqueue(ready, priorities), workers.list(), graph.runsOfAll(hashes)]);
      this.countSlots(ready, registry);
    } else {
      [registry, runIds] = await Promise.all([workers.list(), graph.runsOfAll(hashes)]);
      this.countSlots(ready, registry);
      await queues.enqueue(ready, await this.place(ready, runIds));
    }
    this.lastRegistry = registry;
    await this.promote();
    const alive = registry.filter((w) => w.alive);
    const at = Date.now();
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
   * silently: re-adding a job BullMQ still has is a no-op. For resuming runs;
   * after a restart this is how the fair shares learn the queued jobs again
   * (charged to this run; a job counted already is left as it is).
   */
  async restore(ready: readonly ReadyDerivation[], runId: string): Promise<void> {
    const remote = this.startLocal(ready);
    if (remote.length === 0) return;
    this.countSlots(remote, await this.deps.workers.list());
    await this.deps.queues.enqueue(remote, await this.place(remote, new Map(remote.map((r) => [r.hash, [runId]])), true));
  }

  /** A near worker that may not build a released job (another system, gone, draining) is no reason to wait for it. */
  private keepNearWorkersThatCanBuild(ready: readonly ReadyDerivation[]): void {
    for (const r of ready) {
      if (r.nearWorker === undefined) continue;
      const near = this.lastRegistry.find((w) => w.name === r.nearWorker);
      if (near === undefined || !near.alive || !takesNewBuilds(near) || !canBuild(near, { system: r.job.system, requiredFeatures: r.job.requiredFeatures }))
        delete r.nearWorker;
    }
  }

  /** Corrects the critical paths of queued jobs whose were estimated (see FairShare.reprioritize); jobs a worker took keep theirs. */
  async reprioritize(jobs: ReadonlyArray<{ hash: string; priority: number; criticalPathMs: number }>): Promise<void> {
    const changes = this.fairShare.reprioritize(jobs);
    if (changes.length > 0) await this.deps.queues.promote(changes);
  }

  /** Builds a worker started: they count against their run's share from now on. */
  started(hashes: Iterable<string>): void {
    this.fairShare.started(hashes);
  }

  /** A build a worker gave back waits again. */
  handedBack(hash: string): void {
    this.fairShare.handedBack(hash);
  }

  /** A cancelled run's jobs no longer count; the runs beside it may get its slots at once. */
  async cancelled(runId: string): Promise<void> {
    this.fairShare.forgetRun(runId);
    await this.promote();
  }

  /** How a queued derivation stands in the fair shares (for `nixfarm why`); undefined when not counted. */
  standing(hash: string): FairShareStanding | undefined {
    return this.fairShare.standing(hash);
  }

  /** The slots serving each queue of these jobs: the max-jobs of the live workers that take new builds and may build them. */
  private countSlots(ready: readonly ReadyDerivation[], registry: readonly WorkerListing[]): void {
    const slots = new Map<string, number>();
    for (const r of ready) {
      if (slots.has(r.queue)) continue;
      const requirement = { system: r.job.system, requiredFeatures: r.job.requiredFeatures };
      let n = 0;
      for (const w of registry) if (w.alive && takesNewBuilds(w) && canBuild(w, requirement)) n += w.maxJobs;
      slots.set(r.queue, n);
    }
    this.fairShare.setSlots(slots);
  }

  /**
   * The BullMQ priority of each job: the run's priority and critical path,
   * boosted while its run is below its fair share. `restore`: re-adding what
   * should be queued already (see FairShare.place).
   */
  private async place(ready: readonly ReadyDerivation[], runIds: ReadonlyMap<string, readonly string[]>, restore = false): Promise<number[]> {
    const fair = this.fairShare;
    const unknown = fair.unknownRuns(ready.flatMap((r) => runIds.get(r.hash) ?? []));
    if (unknown.length > 0) await this.learnWeights(unknown);
    return fair.place(
      ready.map((r) => ({
        hash: r.hash,
        jobId: queuedJobId(r.hash, r.attempt),
        queue: r.queue,
        priority: r.priority,
        ...(r.criticalPathMs === undefined ? {} : { criticalPathMs: r.criticalPathMs }),
        runIds: runIds.get(r.hash) ?? [],
      })),
      { restore },
    );
  }

  /** A run's weight is its request's share (1 when absent); read once per run. */
  private async learnWeights(runIds: readonly string[]): Promise<void> {
    const records = await Promise.all(runIds.map((id) => this.deps.graph.run(id, ['request'])));
    runIds.forEach((id, i) => {
      const share = (records[i]?.request as { share?: unknown } | undefined)?.share;
      this.fairShare.setWeight(id, typeof share === 'number' ? share : 1);
    });
  }

  /** Moves the jobs of runs below their share into the boosted sub-band. */
  private async promote(): Promise<void> {
    const promotions = this.fairShare.promotions();
    if (promotions.length === 0) return;
    await this.deps.queues.promote(promotions);
    this.deps.logger?.debug({ promoted: promotions.length }, 'fair share: promoted jobs of runs below their share');
  }

  /** Starts the local builds now (they never wait for a worker); returns the rest. */
  private startLocal(all: readonly ReadyDerivation[]): readonly ReadyDerivation[] {
    const local = this.deps.localBuilder;
    if (local === undefined) return all;
    for (const r of all) if (local.takes(r)) local.submit(r);
    return all.filter((r) => !local.takes(r));
  }
}
