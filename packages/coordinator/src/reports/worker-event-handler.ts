import {
  derivationName,
  hashPart,
  stripTerminalEscapes,
  type BuildFinishedEvent,
  type BuildHandedBackEvent,
  type BuildStartedEvent,
  type Logger,
  type TerminalStatus,
  type WorkerEvent,
} from '@nixfarm/shared';
import type { BuildAttempt, DerivationGraph, FinishOutcome, GraphTransition } from '../graph/derivation-graph.js';
import type { RunEventDelivery, RunEvents } from '../runs/run-events.js';
import type { RunFinalizer } from '../runs/run-finalizer.js';
import type { BuildReportSink } from '../dispatch/build-dispatcher.js';
import type { GcRoots } from '../runs/gc-roots.js';
import { canonicalNarHash, type OutputVerifier } from '../nix/output-verifier.js';
import type { BuildDurations } from '../runs/build-durations.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import type { BuildLogService } from '../logs/build-log-service.js';
import type { OutputSigner } from '../cache/output-signer.js';
import { LOCAL_BUILDER_NAME } from '../local/local-builder.js';
import { isCheckReport, type CheckReportSink } from '../checks/check-report.js';

export interface WorkerEventHandlerDeps {
  /** a success counts only when its outputs are valid in the coordinator's store */
  verifier: OutputVerifier;
  graph: DerivationGraph;
  /** where released dependents and retries go; it counts starts and ends for the fair shares */
  dispatcher: BuildReportSink;
  /** ends a run once none of its derivations is pending */
  finalizer: Pick<RunFinalizer, 'finalize'>;
  events: Pick<RunEvents, 'emit' | 'emitAll'>;
  /** holds a success's outputs for its runs until they end */
  gcRoots: Pick<GcRoots, 'holdOutputs'>;
  /** last build time per derivation name, the weights of the next run's critical paths */
  durations: Pick<BuildDurations, 'record'>;
  logger: Logger;
  /** counters and histograms, updated in memory from each applied batch */
  metrics?: Pick<FarmMetrics, 'buildsStarted' | 'buildsFinished'>;
  /** stores build logs as builds end (absent: logs stay in Redis only) */
  logs?: Pick<BuildLogService, 'archive'>;
  /** signs the outputs of accepted successes (absent: nothing is signed) */
  signer?: Pick<OutputSigner, 'sign' | 'settled'>;
  /** where the reports of reproducibility checks go (their start, end and hand-back); absent: they are dropped */
  checks?: CheckReportSink;
  /** tries for an infrastructure failure before the build ends as aborted */
  maxAttempts?: number;
  /** first retry delay; doubled each try */
  retryBaseDelayMs?: number;
}

/**
 * How a report ends its derivation; `undefined` means "retry if tries are
 * left". Exhaustive by type. An abort the worker marks not retryable (its
 * Nix cannot build at all) ends at once: another try would fail alike.
 */
function terminalStatusFor({ outcome, retryable }: Pick<BuildFinishedEvent, 'outcome' | 'retryable'>): TerminalStatus | undefined {
  switch (outcome) {
    case 'succeeded':
      return 'succeeded';
    case 'failed':
      return 'failed';
    case 'timed-out':
      return 'timed-out';
    case 'log-limit-exceeded':
      return 'log-limit-exceeded';
    case 'cancelled':
      return 'cancelled';
    case 'aborted':
      return retryable === false ? 'aborted' : undefined;
  }
}

/**
 * Applies what workers report to the graph: a success is accepted only when
 * every output is valid in the coordinator's store, then dependents are
 * released; a builder failure ends the derivation and its dependents; an
 * infrastructure failure is retried with back-off.
 */
export class WorkerEventHandler {
  private readonly maxAttempts: number;
  private readonly retryBaseDelayMs: number;

  constructor(private readonly deps: WorkerEventHandlerDeps) {
    this.maxAttempts = deps.maxAttempts ?? 5;
    this.retryBaseDelayMs = deps.retryBaseDelayMs ?? 1000;
  }

  async handle(event: WorkerEvent): Promise<void> {
    await this.handleAll([event]);
  }

  /**
   * Applies a batch of reports in their order, with one check of the store
   * for every reported output and one round trip for each step that can be
   * grouped (graph transitions, run lookups, run events, queueing). A report
   * that needs a retry decision splits the batch, so its attempt count is read
   * after every earlier report was applied.
   */
  async handleAll(reported: readonly WorkerEvent[]): Promise<void> {
    const checks = reported.filter(isCheckReport);
    if (checks.length > 0) {
      if (this.deps.checks === undefined) this.deps.logger.warn({ reports: checks.length }, 'reports of reproducibility checks dropped: no check system');
      else await this.deps.checks.handle(checks);
    }
    const all = reported.filter((e): e is BuildReport => !isCheckReport(e)).map(withoutTerminalEscapes);
    // Before the reports are applied: a run that ends with this batch has its logs stored when it is reported finished.
    await this.archiveLogs(all);
    // A hand-back splits the batch: a build handed back and started elsewhere in the same batch is applied in that order.
    let reports: Array<BuildStartedEvent | BuildFinishedEvent> = [];
    for (const event of all) {
      if (event.type !== 'handed-back') {
        reports.push(event);
        continue;
      }
      await this.handleReports(reports);
      reports = [];
      await this.applyHandBack(event);
    }
    await this.handleReports(reports);
  }

  private async archiveLogs(all: readonly WorkerEvent[]): Promise<void> {
    if (this.deps.logs === undefined) return;
    try {
      await this.deps.logs.archive(all.filter((e): e is BuildStartedEvent | BuildFinishedEvent => e.type !== 'handed-back'));
    } catch (error) {
      this.deps.logger.warn({ err: error }, 'reading build logs to store them failed; they stay readable from Redis');
    }
  }

  /**
   * A worker (draining, or whose Nix cannot build) gave a running build back: it is queued again (the
   * worker returned its BullMQ job under the same id), without counting the
   * try. Ignored unless the node runs on that worker.
   */
  private async applyHandBack(event: BuildHandedBackEvent): Promise<void> {
    const { graph, events, logger } = this.deps;
    const runIds = await graph.handBack(hashPart(event.drvPath), { worker: event.worker, reason: event.reason, at: event.at });
    if (runIds === undefined) {
      logger.debug({ drvPath: event.drvPath, worker: event.worker }, 'stale hand-back ignored: the build does not run on that worker');
      return;
    }
    this.deps.dispatcher.handedBack(hashPart(event.drvPath));
    logger.info({ drvPath: event.drvPath, worker: event.worker, reason: event.reason }, 'build handed back; queued again');
    await events.emit(runIds, { type: 'drv-handed-back', drvPath: event.drvPath, worker: event.worker, reason: event.reason, at: event.at });
  }

  /** Reports of starts and finishes, in their order. */
  private async handleReports(events: ReadonlyArray<BuildStartedEvent | BuildFinishedEvent>): Promise<void> {
    if (events.length === 0) return;
    let segment: Applicable[] = [];
    for (const item of await this.judge(events)) {
      if (item.event.type === 'started' || !('status' in item) || item.status !== undefined) {
        segment.push(item as Applicable);
        continue;
      }
      await this.applySegment(segment);
      segment = [];
      await this.retryOrAbort(item.event, item.error);
    }
    await this.applySegment(segment);
  }

  /**
   * How each report ends its derivation; a success counts only when every
   * output is valid in the coordinator's store. When a success carries NAR
   * hashes, the same query also returns the coordinator's hashes (no extra
   * round trip), and a build whose outputs differ from the coordinator's copy
   * is flagged: the path was already imported from another build of the same
   * derivation, which therefore is not reproducible.
   */
  private async judge(events: ReadonlyArray<BuildStartedEvent | BuildFinishedEvent>): Promise<Judged[]> {
    const successes = events.filter((e): e is BuildFinishedEvent => e.type === 'finished' && e.outcome === 'succeeded');
    const claimed = successes.flatMap((e) => Object.values(e.outputs ?? {}));
    const { verifier } = this.deps;
    let invalid = new Set<string>();
    let storeHashes: Map<string, string> | undefined;
    if (claimed.length > 0 && verifier.narHashes !== undefined && successes.some((e) => e.narHashes !== undefined)) {
      storeHashes = await verifier.narHashes(claimed);
      invalid = new Set(claimed.filter((p) => !storeHashes!.has(p)));
    } else if (claimed.length > 0) {
      invalid = await verifier.invalidPaths(claimed);
    }
    const divergences = storeHashes === undefined ? new Map<BuildFinishedEvent, Divergence[]>() : divergentOutputs(successes, storeHashes);
    const divergenceNotes = await this.describeDivergences(divergences);
    return events.map((event): Judged => {
      if (event.type === 'started') return { event };
      const status = terminalStatusFor(event);
      if (status !== 'succeeded') return { event, status, error: event.error };
      const outputs = Object.values(event.outputs ?? {});
      const missing = outputs.filter((o) => invalid.has(o));
      if (outputs.length > 0 && missing.length === 0) {
        const divergence = divergenceNotes.get(event);
        return { event, status, error: event.error, ...(divergence === undefined ? {} : { divergence }) };
      }
      return {
        event,
        status: undefined,
        error: `worker ${event.worker} reported success but outputs are not valid in the coordinator store: ${missing.join(' ') || '(none reported)'}`,
      };
    });
  }

  /**
   * Names the builds behind each divergence (one read, only when there is
   * one) and warns: which derivation, which worker's build, which hashes, and
   * the workers whose builds were reported before.
   */
  private async describeDivergences(divergences: ReadonlyMap<BuildFinishedEvent, Divergence[]>): Promise<Map<BuildFinishedEvent, string>> {
    const notes = new Map<BuildFinishedEvent, string>();
    if (divergences.size === 0) return notes;
    const builders = await this.deps.graph.builders([...divergences.keys()].map((e) => hashPart(e.drvPath)));
    for (const [event, outputs] of divergences) {
      const earlier = (builders.get(hashPart(event.drvPath)) ?? []).filter((w, i, all) => all.indexOf(w) === i);
      const others = earlier.length === 0 ? 'a build not reported yet' : `the build by ${earlier.join(', ')}`;
      const detail = outputs.map((o) => `${o.path}: ${o.reported} from ${event.worker}, ${o.kept} in the coordinator's store`).join('; ');
      const note = `not reproducible: the build by ${event.worker} (job ${event.jobId} try ${event.attempt}) gave other outputs than ${others}, whose copy the coordinator kept (${detail})`;
      notes.set(event, note);
      this.deps.logger.warn(
        { drvPath: event.drvPath, worker: event.worker, jobId: event.jobId, attempt: event.attempt, earlierBuilders: earlier, outputs },
        'divergent double build: outputs differ from the copy in the coordinator store; the coordinator keeps its copy',
      );
    }
    return notes;
  }

  /**
   * An infrastructure failure: queued again with back-off while tries are
   * left, then aborted. Only the running attempt's report decides: a stale
   * one (a worker that lost its lock while another re-runs the build) would
   * queue a third build, so it is dropped.
   */
  private async retryOrAbort(event: BuildFinishedEvent, error: string | undefined): Promise<void> {
    const { graph, logger } = this.deps;
    const hash = hashPart(event.drvPath);
    const attempts = await graph.attempts(hash);
    if (attempts < this.maxAttempts) {
      const outcome = await graph.requeueAttempt(hash, error ?? 'aborted', reporterOf(event));
      if (outcome.type === 'requeued') {
        const { ready } = outcome;
        ready.delayMs = this.retryBaseDelayMs * 2 ** Math.max(0, attempts - 1);
        logger.warn({ drvPath: event.drvPath, worker: event.worker, attempts, delayMs: ready.delayMs, error }, 'build aborted, retrying');
        // Before the retry is queued, so a follower sees this attempt end before the next one starts.
        await this.deps.events.emit(await graph.runsOf(hash), {
          type: 'drv-retrying',
          drvPath: event.drvPath,
          worker: event.worker,
          ...(error === undefined ? {} : { error }),
          attempts,
          maxAttempts: this.maxAttempts,
          delayMs: ready.delayMs,
          at: Date.now(),
        });
        await this.deps.dispatcher.dispatch([ready]);
      } else if (outcome.reason === 'stale') {
        logStale(logger, event, outcome.why, error);
      }
      return;
    }
    await this.applySegment([{ event, status: 'aborted', error: `${error ?? 'aborted'} (gave up after ${attempts} tries)` }]);
  }

  /** Applies starts and terminal finishes to the graph, then does what follows them, each step for the whole segment at once. */
  private async applySegment(segment: readonly Applicable[]): Promise<void> {
    if (segment.length === 0) return;
    const { graph, events, gcRoots, finalizer, logger } = this.deps;
    const transitions = segment.map((item): GraphTransition => {
      const { event } = item;
      const hash = hashPart(event.drvPath);
      if (!('status' in item)) return { type: 'start', hash, worker: event.worker, at: event.at, job: { jobId: event.jobId, attempt: event.attempt } };
      const e = item.event;
      return {
        type: 'finish',
        hash,
        status: item.status,
        details: { worker: e.worker, finishedAt: e.at, timings: e.timings, error: item.error, logTail: e.logTail, outputs: e.outputs },
        reporter: reporterOf(e),
        ...(item.divergence === undefined ? {} : { divergence: item.divergence }),
      };
    });
    const outcomes = await graph.apply(transitions);

    const started: Array<{ event: BuildStartedEvent; runIds: string[] }> = [];
    const finished: Array<{ event: BuildFinishedEvent; status: TerminalStatus; error: string | undefined; outcome: FinishOutcome }> = [];
    segment.forEach((item, i) => {
      const outcome = outcomes[i]!;
      if (!('status' in item)) {
        if (outcome.applied) started.push({ event: item.event, runIds: outcome.runIds });
      } else if (outcome.type === 'finish') {
        if (outcome.applied) finished.push({ ...item, outcome });
        else if (outcome.stale !== undefined) logStale(logger, item.event, outcome.stale, item.error);
        else logger.debug({ drvPath: item.event.drvPath, worker: item.event.worker }, 'late or duplicate result ignored');
      }
    });
    this.deps.dispatcher.started(started.map(({ event }) => hashPart(event.drvPath)));
    // In memory only: the reports already carry what the metrics need.
    // Every start leaves the wait tracker (a stale one too, so nothing lingers there); applied ones are observed.
    this.deps.metrics?.buildsStarted(
      segment.flatMap((item, i) => (!('status' in item) ? [{ jobId: item.event.jobId, at: item.event.at, applied: outcomes[i]!.applied }] : [])),
    );
    this.deps.metrics?.buildsFinished(
      finished.map(({ event, status }) => ({ status, timings: event.timings, ...(event.system === undefined ? {} : { system: event.system }) })),
    );
    const succeeded = finished.filter((f) => f.status === 'succeeded');
    // Beside everything below: dependents are released without waiting for signatures; only the end of a run waits.
    this.deps.signer?.sign(succeeded.flatMap(({ event }) => Object.values(event.outputs ?? {})));
    const deliveries: RunEventDelivery[] = [];
    for (const { event, runIds } of started)
      deliveries.push({ runIds, event: { type: 'drv-started', drvPath: event.drvPath, worker: event.worker, at: event.at } });
    for (const { event, status, error, outcome } of finished) {
      deliveries.push({
        runIds: outcome.runIds,
        event: {
          type: 'drv-finished',
          drvPath: event.drvPath,
          status,
          worker: event.worker,
          ...(error === undefined ? {} : { error }),
          ...(status === 'succeeded' ? {} : { logTail: event.logTail }),
          at: event.at,
        },
      });
    }
    const failedHashes = finished.flatMap((f) => f.outcome.dependencyFailed);
    const [dependencyFailed, failedRuns] = await Promise.all([
      graph.views(failedHashes),
      graph.runsOfAll(failedHashes),
      // Outputs are held for their runs before any dependent is queued: a GC in between must not take an input.
      gcRoots.holdOutputs(
        succeeded.flatMap(({ event, outcome }) => outcome.runIds.flatMap((runId) => Object.values(event.outputs ?? {}).map((path) => ({ runId, path })))),
      ),
      // Remembered by name: the next run weighs its critical paths with it.
      this.deps.durations.record(succeeded.map(({ event }) => ({ name: derivationName(event.drvPath), ms: event.timings.totalMs }))),
    ]);
    const at = Date.now();
    for (const view of dependencyFailed) {
      deliveries.push({
        runIds: failedRuns.get(hashPart(view.drvPath)) ?? [],
        event: { type: 'drv-finished', drvPath: view.drvPath, status: 'dependency-failed', ...(view.error === undefined ? {} : { error: view.error }), at },
      });
    }
    await events.emitAll(deliveries);
    // A released derivation's runs are among those of the build that released it: with one, they are known.
    const runsOf = new Map<string, readonly string[]>();
    for (const { outcome } of finished) if (outcome.runIds.length === 1) for (const r of outcome.released) runsOf.set(r.hash, outcome.runIds);
    // Each released derivation is offered first to the worker whose build released it: that worker holds the input.
    const released = finished.flatMap((f) => f.outcome.released.map((r) => (f.event.worker === LOCAL_BUILDER_NAME ? r : { ...r, nearWorker: f.event.worker })));
    await this.deps.dispatcher.dispatch(released, { ended: finished.map((f) => hashPart(f.event.drvPath)), runsOf });
    // Before any run is finalized: a run's check of a derivation it just built is queued before the run asks about its checks.
    this.deps.checks?.afterBuilds(succeeded.map(({ event }) => ({ drvPath: event.drvPath, worker: event.worker })));
    const finishedRuns = new Set(finished.flatMap((f) => f.outcome.finishedRuns));
    // A run reported finished has its outputs signed: whoever copies them next (nix copy, a laptop) finds the signatures.
    if (finishedRuns.size > 0) await this.deps.signer?.settled();
    for (const runId of finishedRuns) await finalizer.finalize(runId);
  }
}

/**
 * A report's error and log tail as the coordinator keeps them: they are read
 * from the API, the dashboard and `nixfarm why`, not a terminal, but Nix
 * colours its error messages even as data (`\x1b[35;1m/nix/store/...drv\x1b[0m`
 * in a serve-protocol build result). Log lines usually come filtered by Nix
 * already (it filters for a non-terminal stderr); the tail is stripped too in
 * case a store did not. The log itself is stored as sent. Done here, where
 * every report enters, older workers' and local builds' too.
 */
type BuildReport = BuildStartedEvent | BuildFinishedEvent | BuildHandedBackEvent;

function withoutTerminalEscapes(event: BuildReport): BuildReport {
  if (event.type !== 'finished') return event;
  return {
    ...event,
    logTail: event.logTail.map(stripTerminalEscapes),
    ...(event.error === undefined ? {} : { error: stripTerminalEscapes(event.error) }),
  };
}

/** The attempt a report speaks for: the worker, the BullMQ job and its try. */
function reporterOf(event: BuildFinishedEvent): BuildAttempt {
  return { worker: event.worker, jobId: event.jobId, attempt: event.attempt };
}

function logStale(logger: Logger, event: BuildFinishedEvent, why: string, error: string | undefined): void {
  logger.warn(
    { drvPath: event.drvPath, worker: event.worker, jobId: event.jobId, attempt: event.attempt, outcome: event.outcome, why, error },
    'stale report dropped: it comes from an attempt that no longer decides this build',
  );
}

/** An output whose NAR hash in a worker's report is not the one the coordinator's store holds. */
interface Divergence {
  path: string;
  reported: string;
  kept: string;
}

/** The successes whose reported NAR hashes differ from the coordinator's store, with the outputs that differ. */
function divergentOutputs(successes: readonly BuildFinishedEvent[], storeHashes: ReadonlyMap<string, string>): Map<BuildFinishedEvent, Divergence[]> {
  const out = new Map<BuildFinishedEvent, Divergence[]>();
  for (const event of successes) {
    if (event.narHashes === undefined) continue;
    const outputs = new Set(Object.values(event.outputs ?? {}));
    const differing: Divergence[] = [];
    for (const [path, reported] of Object.entries(event.narHashes)) {
      const kept = storeHashes.get(path);
      // Only the report's own outputs, and only where the store has a hash to compare with.
      if (!outputs.has(path) || kept === undefined || kept === '') continue;
      if (canonicalNarHash(reported) !== canonicalNarHash(kept)) differing.push({ path, reported, kept });
    }
    if (differing.length > 0) out.set(event, differing);
  }
  return out;
}

/** A report with how it ends its derivation; status undefined: a retry decision is due. */
type Judged = { event: BuildStartedEvent } | { event: BuildFinishedEvent; status: TerminalStatus | undefined; error: string | undefined; divergence?: string };
type Applicable = { event: BuildStartedEvent } | { event: BuildFinishedEvent; status: TerminalStatus; error: string | undefined; divergence?: string };
