import type { Logger, EvaluatedAttribute, RunView, SubmitRunRequest } from '@nixfarm/shared';
import { isFailedAttribute, type AttributeResult, type FailedAttribute } from '../evaluation/attribute-result.js';
import { PlanMemory, type BuildPlanner } from '../evaluation/build-planner.js';
import { JobsetEvaluation, type Discovery } from '../evaluation/jobset-evaluation.js';
import { parseFlakeReference } from '../evaluation/flake-reference.js';
import type { JobsetSource } from '../evaluation/jobset-source.js';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { BuildDispatch } from '../dispatch/build-dispatcher.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import { CacheStatusRecorder } from './cache-status-recorder.js';
import type { RunEvents } from './run-events.js';
import type { GcRoots } from './gc-roots.js';
import type { EvaluationEnd, RunAttributes } from './run-attributes.js';
import type { RunFinalizer } from './run-finalizer.js';
import type { RunQueries } from './run-queries.js';
import { newRunId, type RunSubmission } from './run-submission.js';

export interface JobsetSubmissionDeps {
  planner: Pick<BuildPlanner, 'plan'>;
  /** eval-only runs: which outputs are valid already (isCached) */
  nix: Pick<CoordinatorNix, 'invalidPaths'>;
  graph: Pick<DerivationGraph, 'openRun' | 'growRun' | 'closeRun'>;
  events: Pick<RunEvents, 'emit'>;
  gcRoots: Pick<GcRoots, 'prepareRun' | 'releaseRun' | 'holdOutputs' | 'runDir'>;
  attributes: Pick<RunAttributes, 'start' | 'record' | 'end' | 'discover'>;
  /** the steps a run's registration shares with a plain submission */
  steps: Pick<RunSubmission, 'holdInputs' | 'registrationFor' | 'reportKnownFailures'>;
  dispatcher: BuildDispatch;
  finalizer: Pick<RunFinalizer, 'finalize'>;
  queries: Pick<RunQueries, 'get'>;
  logger: Logger;
  /** `--option NAME VALUE` pairs and environment for the evaluators, as for the coordinator's other Nix calls */
  nixOptions: ReadonlyArray<readonly [string, string]>;
  env?: Record<string, string>;
  metrics?: Pick<FarmMetrics, 'runStarted'>;
}

/**
 * Starts jobset runs: the run is opened at once, the jobset is evaluated in
 * the evaluator pool, and each attribute's derivation is planned and grown
 * into the run as soon as it is known, so builds start while evaluation goes
 * on. Each attribute's result is recorded (RunAttributes); when evaluation
 * ends the run is closed. The evaluation lives in this process: a cancel
 * stops it here. An eval-only run grows nothing: each attribute is recorded
 * with isCached and the run ends when evaluation ends.
 */
export class JobsetSubmission {
  private readonly evaluations = new Map<string, JobsetEvaluation>();
  private readonly cancelling = new Set<string>();

  constructor(private readonly deps: JobsetSubmissionDeps) {}

  /**
   * Answers once the top value is listed, however long its first attribute
   * takes to evaluate: a jobset whose top value cannot even be listed is
   * refused here (422), not opened as a run.
   */
  async submit(request: SubmitRunRequest): Promise<RunView> {
    const { graph, events, gcRoots, attributes, logger } = this.deps;
    // A bad flake reference is refused before anything is made for the run.
    const source = sourceOf(request);
    const runId = newRunId();
    await gcRoots.prepareRun(runId);
    const evaluationStarted = Date.now();
    // What listing found is written once the run's evaluation is recorded (before that there is nothing to write to), then as it changes.
    let discovery: Discovery = { discovered: 0, discovering: true };
    let recorded = false;
    const discovered = (found: Discovery): void => {
      discovery = found;
      if (recorded) void attributes.discover(runId, found).catch((error: unknown) => logger.warn({ err: error, runId }, 'could not record discovery progress'));
    };
    const evaluation = await JobsetEvaluation.open({
      source,
      logger: logger.child({ runId }),
      nixOptions: this.deps.nixOptions,
      ...(this.deps.env === undefined ? {} : { env: this.deps.env }),
      ...(request.evalWorkers === undefined ? {} : { evalWorkers: request.evalWorkers }),
      ...(request.evalMaxMemoryMiB === undefined ? {} : { evalMaxMemoryMiB: request.evalMaxMemoryMiB }),
      forceRecurse: request.forceRecurse ?? false,
      // Inside the run's own directory: a coordinator that dies mid-evaluation leaves nothing outside what the run owns.
      rootParent: gcRoots.runDir(runId),
      onDiscovery: discovered,
    });
    try {
      await evaluation.listTop();
    } catch (error) {
      await evaluation.close();
      await gcRoots.releaseRun(runId);
      throw error;
    }
    const now = Date.now();
    await graph.openRun({ runId, now, request, results: [], total: 0, priority: request.priority });
    await attributes.start(runId, evaluationStarted);
    recorded = true;
    discovered(discovery);
    await events.emit([runId], { type: 'run-started', runId, total: 0, at: now });
    this.deps.metrics?.runStarted();
    this.evaluations.set(runId, evaluation);
    void this.stream(runId, request, evaluation).catch((error: unknown) => logger.error({ err: error, runId }, 'jobset run stopped'));
    return this.deps.queries.get(runId);
  }

  /** Stops a run's evaluation (its evaluators are killed): the caller cancels the run's builds. */
  async stopEvaluation(runId: string): Promise<void> {
    const evaluation = this.evaluations.get(runId);
    if (evaluation === undefined) return;
    this.cancelling.add(runId);
    this.evaluations.delete(runId);
    await this.deps.attributes.end(runId, { state: 'cancelled' }, Date.now());
    await evaluation.close();
  }

  private async stream(runId: string, request: SubmitRunRequest, evaluation: JobsetEvaluation): Promise<void> {
    const { graph, attributes, logger } = this.deps;
    let end: EvaluationEnd = { state: 'done' };
    let count = 0;
    const evalOnly = request.evalOnly === true ? new CacheStatusRecorder(runId, { nix: this.deps.nix, attributes }) : undefined;
    const memory = new PlanMemory();
    try {
      // Each group is what evaluation found since the last one was added: the first comes alone, at once; later ones share a plan and a growth.
      for await (const group of evaluation.resultGroups()) {
        count += group.length;
        if (evalOnly !== undefined) for (const result of group) evalOnly.push(result);
        else if (!(await this.add(runId, request, group, memory))) {
          end = { state: 'cancelled' };
          break;
        }
      }
      await evalOnly?.drained();
    } catch (error) {
      end = this.cancelling.has(runId) ? { state: 'cancelled' } : { state: 'failed', error: (error as Error).message };
    } finally {
      this.evaluations.delete(runId);
      await evaluation.close();
      // Every attribute evaluated is recorded, even when evaluation stopped part way.
      await evalOnly?.drained().catch((error: unknown) => logger.error({ err: error, runId }, 'recording cache status failed'));
    }
    await attributes.end(runId, end, Date.now());
    logger.info({ runId, attributes: count, end: end.state }, 'jobset evaluation ended');
    // A cancelled run is ended by its cancellation; closing it here could end it first.
    if (this.cancelling.delete(runId) || end.state === 'cancelled') return;
    if (await graph.closeRun(runId)) await this.deps.finalizer.finalize(runId);
  }

  /** Records a group of attributes and grows the run by what their derivations need built; false when the run takes no more. */
  private async add(runId: string, request: SubmitRunRequest, group: readonly AttributeResult[], memory: PlanMemory): Promise<boolean> {
    const { planner, graph, gcRoots, attributes, steps } = this.deps;
    const evaluated = group.filter((r): r is Exclude<AttributeResult, FailedAttribute> => !isFailedAttribute(r));
    if (evaluated.length > 0) {
      // The evaluation's roots go when it ends; the run holds each .drv until it ends.
      await gcRoots.holdOutputs(evaluated.map((r) => ({ runId, path: r.drvPath })));
      const plan = await planner.plan(
        evaluated.map((r) => r.drvPath),
        memory,
      );
      if (plan.nodes.length > 0) {
        await steps.holdInputs(runId, plan);
        const grown = await graph.growRun(runId, plan.nodes, await steps.registrationFor(request, plan));
        if (grown.type === 'refused') return false;
        await steps.reportKnownFailures(runId, grown, Date.now());
        await this.deps.dispatcher.dispatch(grown.ready);
      }
    }
    // Recorded once registered: a reader never sees an attribute whose derivation the graph does not hold yet. Sent together, kept in order.
    await Promise.all(group.map((result) => attributes.record(runId, attributeOf(result))));
    return true;
  }
}

function attributeOf(result: AttributeResult): EvaluatedAttribute {
  if (isFailedAttribute(result)) return { attr: result.attr, attrPath: result.attrPath, error: result.error, errorKind: result.errorKind };
  return { attr: result.attr, attrPath: result.attrPath, drvPath: result.drvPath, outputs: result.outputs, system: result.system, name: result.name };
}

function sourceOf(request: SubmitRunRequest): JobsetSource {
  return {
    ...(request.file === undefined ? {} : { file: request.file }),
    ...(request.expr === undefined ? {} : { expr: request.expr }),
    ...(request.flake === undefined ? {} : { flake: parseFlakeReference(request.flake, request.cwd) }),
    args: request.args,
    argstrs: request.argstrs,
    includes: request.includes,
    ...(request.cwd === undefined ? {} : { cwd: request.cwd }),
  };
}
