import {
  derivationName,
  hashPart,
  type BuildFinishedEvent,
  type BuildStartedEvent,
  type Logger,
  type TerminalStatus,
  type WorkerEvent,
  type WorkerOutcome,
} from '@nixfarm/shared';
import type { DerivationGraph, FinishOutcome } from '../graph/derivation-graph.js';
import type { RunEvents } from '../runs/run-events.js';
import type { RunService } from '../runs/run-service.js';
import type { GcRoots } from '../runs/gc-roots.js';
import type { OutputVerifier } from '../runs/output-verifier.js';

export interface WorkerEventHandlerDeps {
  /** a success counts only when its outputs are valid in the coordinator's store */
  verifier: OutputVerifier;
  graph: DerivationGraph;
  runs: RunService;
  events: RunEvents;
  gcRoots: GcRoots;
  durations: { record(name: string, ms: number): Promise<void> };
  logger: Logger;
  /** tries for an infrastructure failure before the build ends as aborted */
  maxAttempts?: number;
  /** first retry delay; doubled each try */
  retryBaseDelayMs?: number;
}

/** How each worker outcome ends a derivation; `undefined` means "retry if tries are left". Exhaustive by type. */
function terminalStatusFor(outcome: WorkerOutcome): TerminalStatus | undefined {
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
      return undefined;
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
    switch (event.type) {
      case 'started':
        return this.started(event);
      case 'finished':
        return this.finished(event);
    }
  }

  private async started(event: BuildStartedEvent): Promise<void> {
    const hash = hashPart(event.drvPath);
    if (await this.deps.graph.markStarted(hash, event.worker, event.at)) {
      await this.deps.events.emit(await this.deps.graph.runsOf(hash), { type: 'drv-started', drvPath: event.drvPath, worker: event.worker, at: event.at });
    }
  }

  private async finished(event: BuildFinishedEvent): Promise<void> {
    const { graph, verifier, logger } = this.deps;
    const hash = hashPart(event.drvPath);
    let status = terminalStatusFor(event.outcome);
    let error = event.error;
    if (status === 'succeeded') {
      const outputs = Object.values(event.outputs ?? {});
      const invalid = await verifier.invalidPaths(outputs);
      if (outputs.length === 0 || invalid.size > 0) {
        status = undefined;
        error = `worker ${event.worker} reported success but outputs are not valid in the coordinator store: ${[...invalid].join(' ') || '(none reported)'}`;
      }
    }
    if (status === undefined) {
      const attempts = await graph.attempts(hash);
      if (attempts < this.maxAttempts) {
        const ready = await graph.requeue(hash, error ?? 'aborted');
        if (ready !== undefined) {
          ready.delayMs = this.retryBaseDelayMs * 2 ** Math.max(0, attempts - 1);
          logger.warn({ drvPath: event.drvPath, worker: event.worker, attempts, delayMs: ready.delayMs, error }, 'build aborted, retrying');
          await this.deps.runs.enqueue([ready]);
        }
        return;
      }
      status = 'aborted';
      error = `${error ?? 'aborted'} (gave up after ${attempts} tries)`;
    }
    const outcome = await graph.finish(hash, status, {
      worker: event.worker,
      finishedAt: event.at,
      timings: event.timings,
      error,
      logTail: event.logTail,
      outputs: event.outputs,
    });
    if (!outcome.applied) {
      logger.debug({ drvPath: event.drvPath, worker: event.worker }, 'late or duplicate result ignored');
      return;
    }
    await this.afterFinish(event, status, error, outcome);
  }

  private async afterFinish(event: BuildFinishedEvent, status: TerminalStatus, error: string | undefined, outcome: FinishOutcome): Promise<void> {
    const { graph, events, gcRoots, runs } = this.deps;
    const hash = hashPart(event.drvPath);
    const runIds = await graph.runsOf(hash);
    if (status === 'succeeded') {
      for (const runId of runIds) for (const out of Object.values(event.outputs ?? {})) await gcRoots.holdOutput(runId, out);
      // Remembered by name: the next run weighs its critical paths with it.
      await this.deps.durations.record(derivationName(event.drvPath), event.timings.totalMs);
    }
    await events.emit(runIds, {
      type: 'drv-finished',
      drvPath: event.drvPath,
      status,
      worker: event.worker,
      ...(error === undefined ? {} : { error }),
      ...(status === 'succeeded' ? {} : { logTail: event.logTail }),
      at: event.at,
    });
    for (const view of await graph.views(outcome.dependencyFailed)) {
      await events.emit(await graph.runsOf(hashPart(view.drvPath)), {
        type: 'drv-finished',
        drvPath: view.drvPath,
        status: 'dependency-failed',
        ...(view.error === undefined ? {} : { error: view.error }),
        at: Date.now(),
      });
    }
    await runs.enqueue(outcome.released);
    for (const runId of outcome.finishedRuns) await runs.finalize(runId);
  }
}
