import type { Logger, SubmitRunRequest } from '@nixfarm/shared';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { OutputVerifier } from '../nix/output-verifier.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import type { RunEvents } from './run-events.js';
import type { GcRoots } from './gc-roots.js';
import type { RunAttributes } from './run-attributes.js';
import type { ImagePublishQueue } from '../images/image-publish-queue.js';

export interface RunFinalizerDeps {
  graph: Pick<DerivationGraph, 'run' | 'endRun'>;
  /** whether a finished run's results are valid in the coordinator's store */
  verifier: Pick<OutputVerifier, 'invalidPaths'>;
  gcRoots: Pick<GcRoots, 'addResultRoot' | 'releaseRun'>;
  events: Pick<RunEvents, 'emit'>;
  /** a jobset run's attributes: evaluation failures fail the run; built attributes' outputs are rooted */
  attributes?: Pick<RunAttributes, 'progress' | 'page'>;
  logger: Logger;
  /** counts runs ended (in memory) */
  metrics?: Pick<FarmMetrics, 'runFinished'>;
  /** publishes the images among a run's valid outputs when it asked for that (publishImages) */
  images?: Pick<ImagePublishQueue, 'enqueueRun'>;
  /** queues the uploads of what a run built to the external caches: --push-to's and the run's own pushTo */
  uploads?: { runBuilt(runId: string, outputPaths: readonly string[], pushTo: readonly string[]): Promise<void> };
  /** the reproducibility checks a run asked for (check): it ends once they have, and fails on a difference */
  checks?: RunCheckPort;
}

/** What the finalizer asks the check system (checks/check-service.ts) about a run: checks not ended, and those that fail it. */
export interface RunCheckPort {
  settleRun(runId: string): Promise<{ pending: number; failures: ReadonlyArray<{ drvPath: string; state: string; error?: string }> } | undefined>;
}

/** Ends a run once none of its derivations is pending: checks its results, roots them on success, says it ended. */
export class RunFinalizer {
  constructor(private readonly deps: RunFinalizerDeps) {}

  /** Result roots on success, the run's temporary roots dropped either way. A run no longer running is left alone. */
  async finalize(runId: string): Promise<void> {
    const { graph, gcRoots, verifier, events, logger } = this.deps;
    const run = await graph.run(runId, ['status', 'failed', 'results', 'request']);
    if (run.status !== 'running') return;
    const results = run.results ?? [];
    let status: 'succeeded' | 'failed' = (run.failed ?? 0) > 0 ? 'failed' : 'succeeded';
    let error: string | undefined;
    const request = (run.request ?? {}) as Partial<SubmitRunRequest>;
    // Its builds have all ended; checks it asked for may still run (the check service finalizes it again when they end).
    const checks = request.check === true ? await this.deps.checks?.settleRun(runId) : undefined;
    if (checks !== undefined && checks.pending > 0) return;
    if (checks !== undefined && checks.failures.length > 0 && status === 'succeeded') {
      status = 'failed';
      error = checkFailure(checks.failures);
    }
    // The promise of a run: every requested output is valid in this store (and only valid ones are published).
    const invalid = status === 'succeeded' || request.publishImages !== undefined ? await verifier.invalidPaths(results.map((r) => r.outputPath)) : new Set();
    if (status === 'succeeded') {
      if (invalid.size > 0) {
        status = 'failed';
        error = `outputs not valid in the coordinator store: ${[...invalid].join(' ')}`;
      } else {
        for (const [i, r] of results.entries()) await gcRoots.addResultRoot(runId, i, r.outputPath);
      }
    }
    const jobset = await this.finalizeJobset(runId);
    if (jobset?.error !== undefined && status === 'succeeded') {
      status = 'failed';
      error = jobset.error;
    }
    // Queued before the run says it ended, so that whoever reads the ended run sees its publications; built outputs are published whatever the others did.
    const built = jobset?.built ?? results.filter((r) => !invalid.has(r.outputPath));
    await this.deps.images?.enqueueRun(runId, request, built);
    // Uploads likewise, only queued (builds never wait on them): a run's results once it succeeded, a jobset's every attribute that built.
    const uploads = jobset?.built ?? (status === 'succeeded' ? results : []);
    if (uploads.length > 0) await this.deps.uploads?.runBuilt(runId, [...new Set(uploads.map((u) => u.outputPath))], request.pushTo ?? []);
    await gcRoots.releaseRun(runId);
    const now = Date.now();
    // Ended meanwhile (cancelled while its outputs were checked): the cancellation said so already.
    if (!(await graph.endRun({ runId, status, now, ...(error === undefined ? {} : { error }) }))) return;
    await events.emit([runId], { type: 'run-finished', runId, status, at: now });
    this.deps.metrics?.runFinished(status);
    logger.info({ runId, status, error }, 'run finished');
  }

  /**
   * A jobset run: every attribute that built keeps its outputs rooted, whatever
   * the others did (as Hydra keeps each job's build). Returns those outputs,
   * and why the run fails although no build failed: an attribute that did not evaluate.
   */
  private async finalizeJobset(runId: string): Promise<{ built: Array<{ attr: string; outputPath: string }>; error?: string } | undefined> {
    const progress = await this.deps.attributes?.progress(runId);
    if (progress === undefined || this.deps.attributes === undefined) return undefined;
    const outputs = (await this.deps.attributes.page(runId)).flatMap((a) => Object.values(a.outputs ?? {}).map((outputPath) => ({ attr: a.attr, outputPath })));
    const invalid = await this.deps.verifier.invalidPaths(outputs.map((o) => o.outputPath));
    const built = outputs.filter((o) => !invalid.has(o.outputPath));
    for (const [i, { outputPath }] of built.entries()) await this.deps.gcRoots.addResultRoot(runId, i, outputPath);
    if (progress.state === 'failed') return { built, error: `evaluation stopped: ${progress.error ?? 'unknown error'}` };
    if (progress.failed > 0) return { built, error: `${progress.failed} attribute${progress.failed === 1 ? '' : 's'} failed to evaluate` };
    return { built };
  }
}

/** Why a run whose builds all succeeded failed its checks, naming each derivation and where its difference is shown. */
function checkFailure(failures: ReadonlyArray<{ drvPath: string; state: string; error?: string }>): string {
  const differ = failures.filter((f) => f.state === 'not-reproducible');
  const broke = failures.filter((f) => f.state !== 'not-reproducible');
  const parts: string[] = [];
  if (differ.length > 0)
    parts.push(
      `${differ.length} derivation${differ.length === 1 ? ' is' : 's are'} not reproducible: ${differ.map((f) => f.drvPath).join(' ')} (nixfarm diff DRV shows how)`,
    );
  if (broke.length > 0)
    parts.push(`${broke.length} check${broke.length === 1 ? '' : 's'} could not finish: ${broke.map((f) => `${f.drvPath}: ${f.error ?? f.state}`).join('; ')}`);
  return parts.join('; ');
}
