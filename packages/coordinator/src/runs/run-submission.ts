import { randomBytes } from 'node:crypto';
import { criticalPathBucket, type BuildJob, type Logger, type RunView, type SubmitRunRequest } from '@nixfarm/shared';
import type { BuildPlan, PlannedDerivation } from '../evaluation/build-planner.js';
import type { DerivationGraph, RegistrationOptions, RegistrationOutcome } from '../graph/derivation-graph.js';
import { PlanOrder, type CriticalPaths } from '../graph/plan-order.js';
import type { BuildDispatch } from '../dispatch/build-dispatcher.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import type { RunEvents } from './run-events.js';
import type { BuildDurations } from './build-durations.js';
import type { GcRoots } from './gc-roots.js';
import type { EvaluatedRun, RunEvaluation } from './run-evaluation.js';
import type { RunFinalizer } from './run-finalizer.js';
import type { RunQueries } from './run-queries.js';

/** The weight of a derivation never built before: every unknown step counts the same. */
const DEFAULT_BUILD_MS = 1000;
/** Derivations registered and queued before the build times are looked up: leaves. */
const FIRST_PART = 1000;

export interface RunSubmissionDeps {
  evaluation: Pick<RunEvaluation, 'evaluate'>;
  graph: Pick<DerivationGraph, 'openRun' | 'registerRun' | 'views' | 'closeRun' | 'setCriticalPaths'>;
  events: Pick<RunEvents, 'emit' | 'emitAll'>;
  gcRoots: Pick<GcRoots, 'prepareRun' | 'releaseRun' | 'holdOutputs'>;
  /** last build times by name: the weights of critical paths */
  durations: Pick<BuildDurations, 'lookup'>;
  /** where what is ready at once goes */
  dispatcher: BuildDispatch;
  /** ends a run with nothing to build */
  finalizer: Pick<RunFinalizer, 'finalize'>;
  queries: Pick<RunQueries, 'get'>;
  logger: Logger;
  /** counts runs started (in memory) */
  metrics?: Pick<FarmMetrics, 'runStarted'>;
  /** the reproducibility checks a run asks for (check) */
  checks?: { requestForRun(runId: string, priority: number, drvPaths: readonly string[], planned: ReadonlyMap<string, BuildJob>): Promise<void> };
}

/**
 * Starts runs: evaluate, plan, register in the graph, dispatch what is ready.
 * The run record is the graph's (graph/run-record.ts): a run is open while it
 * registers, so one whose early derivations finish fast is not ended before
 * all are registered.
 */
export class RunSubmission {
  constructor(private readonly deps: RunSubmissionDeps) {}

  async submit(request: SubmitRunRequest): Promise<RunView> {
    const { gcRoots, evaluation } = this.deps;
    const runId = newRunId();
    await gcRoots.prepareRun(runId);
    let evaluated: EvaluatedRun;
    try {
      evaluated = await evaluation.evaluate(request, runId);
    } catch (error) {
      // Nothing was registered: the run leaves no roots and no trace but the error.
      await gcRoots.releaseRun(runId);
      throw error;
    }
    return this.submitEvaluated(request, evaluated, runId);
  }

  /**
   * Starts a run from an already evaluated plan: records it, registers it in
   * the graph and queues what is ready. submit() ends here; the scheduler
   * bench enters here with a synthetic plan, skipping Nix.
   *
   * The first build waits for nothing that needs the whole graph's data from
   * Redis: the plan is ordered in memory (leaves first), the first part
   * (FIRST_PART derivations, leaves) has its inputs held and is registered
   * and queued at once, with critical paths estimated from the graph's shape
   * (every derivation weighs the same). Then the build times are looked up,
   * the critical paths computed with them, the estimates corrected (in the
   * nodes, and the BullMQ priority of every job that still waits), and the
   * rest is held and registered, each chunk queued as it is registered.
   */
  async submitEvaluated(request: SubmitRunRequest, evaluated: EvaluatedRun, runId = newRunId()): Promise<RunView> {
    const { graph, events, gcRoots, logger } = this.deps;
    const { results, plan } = evaluated;
    const phases = new PhaseTimer();
    const started = performance.now();
    let firstQueuedMs: number | undefined;
    await gcRoots.prepareRun(runId);
    // Ordered in memory (typed arrays: tens of ms at 100,000), so that the first part's estimates know the graph's shape.
    let order: PlanOrder<PlannedDerivation>;
    let first: PlannedDerivation[];
    try {
      order = new PlanOrder(plan.nodes);
      first = order.slice(0, FIRST_PART);
      await this.holdInputsOf(runId, first, (hash) => order.node(hash));
    } catch (error) {
      await gcRoots.releaseRun(runId);
      throw error;
    }
    phases.mark('holdFirstMs');
    const now = Date.now();
    await graph.openRun({ runId, now, request, results, total: plan.nodes.length, priority: request.priority });
    await events.emit([runId], { type: 'run-started', runId, total: plan.nodes.length, at: now });
    this.deps.metrics?.runStarted();
    const options = this.withLimits(request, plan, plan.nodes);
    const fifo = request.order === 'fifo';
    // Each chunk's ready derivations are queued as soon as it is registered: a large run's leaves build while the rest registers.
    let ready = 0;
    const onChunk = async (part: RegistrationOutcome): Promise<void> => {
      if (ready === 0 && part.ready.length > 0) firstQueuedMs = Math.round(performance.now() - started);
      ready += part.ready.length;
      await this.reportKnownFailures(runId, part, now);
      await this.deps.dispatcher.dispatch(part.ready);
    };
    // Estimated from the shape alone, every derivation weighing the same: a long chain's leaf still goes first.
    const estimate = order.criticalPaths(() => DEFAULT_BUILD_MS);
    const head = await graph.registerRun(runId, first, { ...options, ordered: true, ...(fifo ? {} : { criticalPathMs: estimate }) }, onChunk);
    phases.mark('firstPartMs');
    const rest = order.slice(FIRST_PART, plan.nodes.length);
    await this.holdInputsOf(runId, rest, (hash) => order.node(hash));
    phases.mark('holdInputsMs');
    const criticalPathMs = fifo ? undefined : await this.criticalPaths(order);
    if (criticalPathMs !== undefined) await this.correctEstimates(request.priority, first, estimate, criticalPathMs);
    phases.mark('criticalPathMs');
    const tail = await graph.registerRun(runId, rest, { ...options, ordered: true, ...(criticalPathMs === undefined ? {} : { criticalPathMs }) }, onChunk);
    phases.mark('registerMs');
    logger.info(
      {
        runId,
        derivations: plan.nodes.length,
        ready,
        joined: head.joined + tail.joined,
        cachedFailures: head.cachedFailures.length + tail.cachedFailures.length,
        read: plan.derivationsRead,
        ...phases.durations,
        ...(firstQueuedMs === undefined ? {} : { firstQueuedMs }),
      },
      'run submitted',
    );
    if (request.check === true) {
      const planned = new Map(plan.nodes.map((n) => [n.job.drvPath, n.job]));
      await this.deps.checks?.requestForRun(
        runId,
        request.priority,
        results.map((r) => r.drvPath),
        planned,
      );
    }
    // Registration is complete: the run takes no more derivations; a run with nothing to build ends here.
    if (await graph.closeRun(runId)) await this.deps.finalizer.finalize(runId);
    return this.deps.queries.get(runId);
  }

  /**
   * The first part was registered with estimated critical paths: where the
   * build times change one's priority bucket, the node's field is corrected
   * (a derivation released later is queued with it) and so is the priority of
   * its job if it waits in BullMQ (a job already taken keeps its order).
   */
  private async correctEstimates(priority: number, first: readonly PlannedDerivation[], estimate: CriticalPaths, actual: CriticalPaths): Promise<void> {
    const changed: Array<{ hash: string; priority: number; criticalPathMs: number }> = [];
    for (const { hash } of first) {
      const was = estimate.get(hash);
      const is = actual.get(hash);
      if (was !== undefined && is !== undefined && criticalPathBucket(was) !== criticalPathBucket(is)) changed.push({ hash, priority, criticalPathMs: is });
    }
    await this.deps.graph.setCriticalPaths(changed);
    await this.deps.dispatcher.reprioritize(changed);
  }

  /** Failures known from before are reported at once; nothing is rebuilt unless asked (--rebuild-failed). A jobset run's growth reports them too. */
  async reportKnownFailures(runId: string, registered: Pick<RegistrationOutcome, 'cachedFailures' | 'dependencyFailed'>, now: number): Promise<void> {
    const { graph, events } = this.deps;
    const known = await graph.views([...registered.cachedFailures, ...registered.dependencyFailed]);
    await events.emitAll(
      known.map((view) => {
        const cached = view.status === 'cached-failure';
        return {
          runIds: [runId],
          event: {
            type: 'drv-finished' as const,
            drvPath: view.drvPath,
            status: view.status,
            ...(view.worker === undefined ? {} : { worker: view.worker }),
            error: cached
              ? `failed before${view.error ? ` (${view.error})` : ''}; not rebuilt: pass --rebuild-failed to try again`
              : (view.error ?? 'an input failed before'),
            ...(cached && view.logTail !== undefined ? { logTail: view.logTail } : {}),
            at: now,
          },
        };
      }),
    );
  }

  /**
   * Outputs of input derivations that were already valid are held for the run
   * too: a GC while it runs must not take what its builds copy. Input sources
   * need no root of their own: they are in the closure of the .drv files,
   * which evaluation rooted.
   */
  async holdInputs(runId: string, plan: BuildPlan): Promise<void> {
    const byHash = new Map(plan.nodes.map((n) => [n.hash, n]));
    await this.holdInputsOf(runId, plan.nodes, (hash) => byHash.get(hash));
  }

  /**
   * Holds the inputs of some of a plan's nodes: each node's input paths but
   * its own sources and the outputs of its inputs that the plan builds. Per
   * part, so the first part's are held without a walk of the whole plan.
   */
  private async holdInputsOf(runId: string, nodes: readonly PlannedDerivation[], planned: (hash: string) => PlannedDerivation | undefined): Promise<void> {
    const held = new Set<string>();
    // A handful of paths per node: arrays searched, no set built per node.
    for (const n of nodes) {
      const built = n.inputs.flatMap((input) => Object.values(planned(input)?.job.outputs ?? {}));
      for (const path of n.job.inputPaths) if (!n.drv.inputSrcs.includes(path) && !built.includes(path)) held.add(path);
    }
    await this.deps.gcRoots.holdOutputs([...held].map((path) => ({ runId, path })));
  }

  /**
   * How a plan joins its run, the same for a whole run and for a jobset
   * run's growth: the request's time limits on each build job, and its order
   * (critical paths first unless fifo).
   */
  async registrationFor(request: SubmitRunRequest, plan: BuildPlan): Promise<RegistrationOptions> {
    const options = this.withLimits(request, plan, plan.nodes);
    return request.order === 'fifo' ? options : { ...options, criticalPathMs: await this.criticalPaths(new PlanOrder(plan.nodes)) };
  }

  /** The request's time limits on each build job, and the registration options without critical paths. */
  private withLimits(request: SubmitRunRequest, plan: BuildPlan, nodes: readonly PlannedDerivation[]): RegistrationOptions {
    for (const node of nodes) {
      node.job.timeoutSeconds = request.timeoutSeconds;
      node.job.maxSilentSeconds = request.maxSilentSeconds;
    }
    return {
      priority: request.priority,
      rebuildFailed: request.rebuildFailed,
      ...(plan.checkedAt === undefined ? {} : { checkedAt: plan.checkedAt }),
    };
  }

  /** Each node's remaining chain of work, weighted by the last known build time of a derivation of the same name. */
  private async criticalPaths(order: PlanOrder<PlannedDerivation>): Promise<CriticalPaths> {
    const weights = await this.deps.durations.lookup([...new Set(order.nodes.map((n) => n.drv.name))]);
    return order.criticalPaths((n) => weights.get(n.drv.name) ?? DEFAULT_BUILD_MS);
  }
}

/** Milliseconds spent in each step of a submission, for its log line: where a large run's time goes. */
class PhaseTimer {
  readonly durations: Record<string, number> = {};
  private last = performance.now();

  mark(name: string): void {
    const now = performance.now();
    this.durations[name] = Math.round(now - this.last);
    this.last = now;
  }
}

export function newRunId(): string {
  // Sortable by time, then random: readable in logs and unique without coordination.
  return Date.now().toString(36) + randomBytes(5).toString('hex');
}
