import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  NixfarmError,
  criticalPaths,
  redisKeys,
  runIdSchema,
  type Logger,
  type RunResult,
  type RunView,
  type SubmitRunRequest,
} from '@nixfarm/shared';
import type { BuildPlan, BuildPlanner, PlannedDerivation } from '../evaluation/build-planner.js';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { BuildQueues } from '../dispatch/build-queues.js';
import type { RunEvents } from './run-events.js';
import type { BuildDurations } from './build-durations.js';
import type { OutputVerifier } from './output-verifier.js';
import type { GcRoots } from './gc-roots.js';
import type { BuildDispatcher } from '../dispatch/build-dispatcher.js';
import { LOCAL_BUILDER_NAME } from '../local/local-builder.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';

/** What evaluation and planning produce: the requested results and the derivations to build. */
export interface EvaluatedRun {
  results: RunResult[];
  plan: BuildPlan;
}

/** The weight of a derivation never built before: every unknown step counts the same. */
const DEFAULT_BUILD_MS = 1000;

export class RunNotFoundError extends NixfarmError {
  constructor(runId: string) {
    super('run-not-found', `no run with id ${JSON.stringify(runId)}: list runs with \`nixfarm runs\``);
  }
}

export interface RunServiceDeps {
  redis: Redis;
  /** evaluation: nix-instantiate and reading .drv files */
  nix: Pick<CoordinatorNix, 'instantiate' | 'readDerivation'>;
  /** whether a finished run's results are valid in the coordinator's store */
  verifier: OutputVerifier;
  planner: BuildPlanner;
  graph: DerivationGraph;
  queues: BuildQueues;
  events: RunEvents;
  gcRoots: GcRoots;
  /** last build times by name: the weights of critical paths */
  durations: Pick<BuildDurations, 'lookup'>;
  /** where ready derivations go: the local builder, a queue, or unsupported */
  dispatcher: Pick<BuildDispatcher, 'dispatch' | 'restore' | 'buildsLocally'>;
  logger: Logger;
  /** counts runs started and ended (in memory) */
  metrics?: Pick<FarmMetrics, 'runStarted' | 'runFinished'>;
}

/**
 * Runs: evaluate, plan, register in the graph, queue what is ready; and end
 * a run once none of its derivations is pending. The run record is the
 * graph's (graph/run-record.ts): a run is open while it registers, so one
 * whose early derivations finish fast is not ended before all are registered.
 */
export class RunService {
  constructor(private readonly deps: RunServiceDeps) {}

  async submit(request: SubmitRunRequest): Promise<RunView> {
    const { gcRoots } = this.deps;
    const runId = newRunId();
    await gcRoots.prepareRun(runId);
    let evaluated: EvaluatedRun;
    try {
      evaluated = await this.evaluate(request, runId);
    } catch (error) {
      // Nothing was registered: the run leaves no roots and no trace but the error.
      await gcRoots.releaseRun(runId);
      throw error;
    }
    return this.submitEvaluated(request, evaluated, runId);
  }

  /**
   * Starts a run from an already evaluated plan: holds its inputs, records it,
   * registers it in the graph and queues what is ready. submit() ends here;
   * the scheduler bench enters here with a synthetic plan, skipping Nix.
   */
  async submitEvaluated(request: SubmitRunRequest, evaluated: EvaluatedRun, runId = newRunId()): Promise<RunView> {
    const { graph, events, gcRoots, logger } = this.deps;
    const { results, plan } = evaluated;
    const phases = new PhaseTimer();
    await gcRoots.prepareRun(runId);
    try {
      await this.holdInputs(runId, plan);
      phases.mark('holdInputsMs');
    } catch (error) {
      await gcRoots.releaseRun(runId);
      throw error;
    }
    const now = Date.now();
    await graph.openRun({ runId, now, request, results, total: plan.nodes.length, priority: request.priority });
    await events.emit([runId], { type: 'run-started', runId, total: plan.nodes.length, at: now });
    this.deps.metrics?.runStarted();
    for (const node of plan.nodes) {
      node.job.timeoutSeconds = request.timeoutSeconds;
      node.job.maxSilentSeconds = request.maxSilentSeconds;
    }
    const criticalPathMs = request.order === 'fifo' ? undefined : await this.criticalPaths(plan.nodes);
    phases.mark('criticalPathMs');
    const registered = await graph.registerRun(runId, plan.nodes, {
      priority: request.priority,
      rebuildFailed: request.rebuildFailed,
      criticalPathMs,
      ...(plan.checkedAt === undefined ? {} : { checkedAt: plan.checkedAt }),
    });
    phases.mark('registerMs');
    // Failures known from before are reported at once; nothing is rebuilt unless asked (--rebuild-failed).
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
            error: cached ? `failed before${view.error ? ` (${view.error})` : ''}; not rebuilt: pass --rebuild-failed to try again` : (view.error ?? 'an input failed before'),
            ...(cached && view.logTail !== undefined ? { logTail: view.logTail } : {}),
            at: now,
          },
        };
      }),
    );
    await this.deps.dispatcher.dispatch(registered.ready);
    phases.mark('enqueueMs');
    logger.info(
      {
        runId,
        derivations: plan.nodes.length,
        ready: registered.ready.length,
        joined: registered.joined,
        cachedFailures: registered.cachedFailures.length,
        read: plan.derivationsRead,
        ...phases.durations,
      },
      'run submitted',
    );
    // Registration is complete: the run takes no more derivations; a run with nothing to build ends here.
    if (await graph.closeRun(runId)) await this.finalize(runId);
    return this.get(runId);
  }

  /** Evaluates, finds each result's output path, plans what to build, and holds what the run will copy. */
  private async evaluate(request: SubmitRunRequest, runId: string): Promise<EvaluatedRun> {
    const { nix, planner, gcRoots } = this.deps;
    const attrs = await nix.instantiate({ ...request, rootPrefix: gcRoots.derivationRootPrefix(runId) });
    const results: RunResult[] = [];
    for (const a of attrs) {
      const drv = await nix.readDerivation(a.drvPath);
      const outputPath = drv.outputs[a.outputName];
      if (outputPath === undefined || outputPath === '') {
        throw new NixfarmError('unsupported-derivation', `${a.drvPath} has no output ${JSON.stringify(a.outputName)} with a known path (content-addressed derivations are not supported yet)`);
      }
      results.push({ attr: a.attr, drvPath: a.drvPath, outputName: a.outputName, outputPath });
    }
    const plan = await planner.plan(attrs.map((a) => a.drvPath));
    return { results, plan };
  }

  /**
   * Outputs of input derivations that were already valid are held for the run
   * too: a GC while it runs must not take what its builds copy. Input sources
   * need no root of their own: they are in the closure of the .drv files,
   * which evaluation rooted.
   */
  private async holdInputs(runId: string, plan: BuildPlan): Promise<void> {
    const built = new Set<string>();
    const sources = new Set<string>();
    for (const n of plan.nodes) {
      for (const out of Object.values(n.job.outputs)) built.add(out);
      for (const src of n.drv.inputSrcs) sources.add(src);
    }
    const held = new Set<string>();
    for (const n of plan.nodes) for (const input of n.job.inputPaths) if (!built.has(input) && !sources.has(input)) held.add(input);
    await this.deps.gcRoots.holdOutputs([...held].map((path) => ({ runId, path })));
  }

  /** Each node's remaining chain of work, weighted by the last known build time of a derivation of the same name. */
  private async criticalPaths(nodes: readonly PlannedDerivation[]): Promise<Map<string, number>> {
    const weights = await this.deps.durations.lookup([...new Set(nodes.map((n) => n.drv.name))]);
    return criticalPaths(nodes.map((n) => ({ hash: n.hash, inputs: n.inputs, weightMs: weights.get(n.drv.name) ?? DEFAULT_BUILD_MS })));
  }

  /** Ends a run whose derivations have all ended: result roots on success, the run's temporary roots dropped either way. */
  async finalize(runId: string): Promise<void> {
    const { graph, gcRoots, verifier, events, logger } = this.deps;
    const run = await graph.run(runId, ['status', 'failed', 'results']);
    if (run.status !== 'running') return;
    const results = run.results ?? [];
    let status: 'succeeded' | 'failed' = (run.failed ?? 0) > 0 ? 'failed' : 'succeeded';
    let error: string | undefined;
    if (status === 'succeeded') {
      // The promise of a run: every requested output is valid in this store.
      const invalid = await verifier.invalidPaths(results.map((r) => r.outputPath));
      if (invalid.size > 0) {
        status = 'failed';
        error = `outputs not valid in the coordinator store: ${[...invalid].join(' ')}`;
      } else {
        for (const [i, r] of results.entries()) await gcRoots.addResultRoot(runId, i, r.outputPath);
      }
    }
    await gcRoots.releaseRun(runId);
    const now = Date.now();
    // Ended meanwhile (cancelled while its outputs were checked): the cancellation said so already.
    if (!(await graph.endRun({ runId, status, now, ...(error === undefined ? {} : { error }) }))) return;
    await events.emit([runId], { type: 'run-finished', runId, status, at: now });
    this.deps.metrics?.runFinished(status);
    logger.info({ runId, status, error }, 'run finished');
  }

  /**
   * Cancels a run: its queued builds leave their queues, its running builds
   * are stopped on their workers, except where another running run needs them.
   */
  async cancel(runId: string): Promise<RunView> {
    const { graph, queues, redis, events, gcRoots, logger } = this.deps;
    await this.get(runId);
    const cancelled = await graph.cancelRun(runId);
    if (cancelled === undefined) return this.get(runId);
    const views = await graph.views(cancelled.map((c) => c.hash));
    for (const [i, c] of cancelled.entries()) {
      const view = views[i];
      if (c.was === 'running') await redis.publish(redisKeys.cancelBuilds, c.hash);
      else if (c.was === 'queued' && view !== undefined) {
        const queue = (await graph.nodes.read(c.hash, ['queue']))?.queue ?? '';
        if (queue !== '') await queues.remove(queue, c.hash, view.attempts);
      }
    }
    const now = Date.now();
    await events.emitAll(views.map((view) => ({ runIds: [runId], event: { type: 'drv-finished' as const, drvPath: view.drvPath, status: 'cancelled' as const, at: now } })));
    await gcRoots.releaseRun(runId);
    await events.emit([runId], { type: 'run-finished', runId, status: 'cancelled', at: now });
    this.deps.metrics?.runFinished('cancelled');
    logger.info({ runId, cancelled: cancelled.length, stopped: cancelled.filter((c) => c.was === 'running').length }, 'run cancelled');
    return this.get(runId);
  }

  /**
   * Every queued derivation of an unfinished run is put back in BullMQ (a
   * no-op where the job survived) or handed to the local builder. After a
   * restart (`afterRestart`), local builds the previous process was running
   * died with it: they are queued again. Workers' builds need nothing: their
   * jobs' locks expire and another worker takes them; their reports wait in
   * the stream.
   */
  async resume(options: { afterRestart?: boolean } = {}): Promise<number> {
    const { graph, dispatcher, redis, logger } = this.deps;
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
      if ((remaining ?? 0) <= 0) await this.finalize(runId);
    }
    return active.length;
  }

  async get(runId: string): Promise<RunView> {
    if (!runIdSchema.safeParse(runId).success) throw new RunNotFoundError(runId);
    const { graph } = this.deps;
    const run = await graph.run(runId, ['status', 'createdAt', 'finishedAt', 'request', 'results', 'total', 'error']);
    if (run.status === undefined) throw new RunNotFoundError(runId);
    const counts = await graph.statusCounts(await graph.derivationsOf(runId));
    return {
      id: runId,
      status: run.status,
      createdAt: run.createdAt ?? Number.NaN,
      finishedAt: run.finishedAt,
      request: run.request ?? null,
      results: run.results ?? [],
      total: run.total ?? 0,
      counts,
      ...(run.error === undefined ? {} : { error: run.error }),
    };
  }

  async derivations(runId: string) {
    await this.get(runId);
    return this.deps.graph.views(await this.deps.graph.derivationsOf(runId));
  }

  async list(limit = 50): Promise<RunView[]> {
    const ids = await this.deps.redis.zrevrange(redisKeys.runs, 0, limit - 1);
    return Promise.all(ids.map((id) => this.get(id)));
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

function newRunId(): string {
  // Sortable by time, then random: readable in logs and unique without coordination.
  return Date.now().toString(36) + randomBytes(5).toString('hex');
}
