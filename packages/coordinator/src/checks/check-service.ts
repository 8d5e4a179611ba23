import {
  derivationName,
  hashOfCheckJobId,
  hashPart,
  isCheckEnded,
  stripTerminalEscapes,
  type BuildJob,
  type CheckFinishedEvent,
  type CheckState,
  type CheckView,
  type EndedCheckState,
  type Logger,
  type RunEvent,
} from '@nixfarm/shared';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { BuildPlanner } from '../evaluation/build-planner.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import { canonicalNarHash } from '../nix/output-verifier.js';
import type { CheckReport, CheckReportSink } from './check-report.js';
import { checkView, type CheckRecord, type CheckRecords } from './check-records.js';
import type { CheckQueues } from './check-queues.js';
import type { MismatchInspector } from './mismatch-inspector.js';
import type { Candidate, WhyQuery } from '../explain/index.js';

export interface CheckServiceOptions {
  records: CheckRecords;
  queues: Pick<CheckQueues, 'enqueueAll' | 'remove' | 'stranded'>;
  /** the job of a derivation no plan of the run holds (its outputs were valid) */
  planner: Pick<BuildPlanner, 'jobFor'>;
  /** who built a derivation, and whether a run still has builds to end */
  graph: Pick<DerivationGraph, 'builders' | 'run' | 'nodes'>;
  /** the NAR hashes of the coordinator's copies (an invalid path is absent) */
  narHashes: (paths: readonly string[]) => Promise<Map<string, string>>;
  /** brings a differing output back and shows the difference; absent: mismatches are recorded by hash only */
  inspector?: Pick<MismatchInspector, 'inspect'>;
  /** the runs' event streams (runs/run-events.ts) */
  events: { emit(runIds: Iterable<string>, event: RunEvent): Promise<void> };
  /** ends a run whose last check ended (late-bound: the finalizer asks this service first) */
  finalize: (runId: string) => Promise<void>;
  logger: Logger;
  metrics?: Pick<FarmMetrics, 'checkEnded' | 'watchChecks'>;
  /** --check-fraction: the share of successful builds checked in the background (0: none) */
  fraction?: number;
  /** a differing output is brought back only up to this NAR size (bytes) */
  maxNarBytes?: number;
  /** tries of a check whose rebuild was stopped by an infrastructure fault */
  maxAttempts?: number;
  /** the API path of a check's report */
  diffUrl?: (hash: string) => string;
  /** for sampling: Math.random unless a test says otherwise */
  random?: () => number;
}

/** What the run finalizer learns of a run's checks. */
export interface RunChecks {
  /** checks not ended: the run waits for them */
  pending: number;
  /** ended checks that fail the run: not reproducible, or the rebuild did not finish */
  failures: CheckRecord[];
}

const DEFAULT_MAX_NAR_BYTES = 256 * 1024 * 1024;

/**
 * Reproducibility checks: a derivation whose outputs are valid in the
 * coordinator's store is built again on another worker and the NAR hashes
 * compared, as `nix-build --check` does on one machine. Runs ask for checks of
 * their requested derivations (`--check`); the coordinator samples a share of
 * all successful builds (`--check-fraction`) into queues workers serve only
 * when nothing else waits. A mismatch brings the rebuilt output back and shows
 * the difference. This facade owns a check's life; records, queues and the
 * inspection of a difference are its systems.
 */
export class CheckService implements CheckReportSink {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly maxAttempts: number;
  private readonly diffUrl: (hash: string) => string;

  constructor(private readonly options: CheckServiceOptions) {
    this.maxAttempts = options.maxAttempts ?? 3;
    this.diffUrl = options.diffUrl ?? ((hash) => `/api/checks/${hash}/diff`);
    options.metrics?.watchChecks(async () => (await options.records.active()).length);
  }

  get fraction(): number {
    return this.options.fraction ?? 0;
  }

  /**
   * A run asks to check its requested derivations: those it builds wait for
   * their build (`planned` holds their jobs); the others, valid already, are
   * queued now.
   */
  async requestForRun(runId: string, priority: number, drvPaths: readonly string[], planned: ReadonlyMap<string, BuildJob>): Promise<void> {
    const unique = [...new Set(drvPaths)];
    if (unique.length === 0) return;
    const jobs = new Map<string, BuildJob>();
    for (const drvPath of unique) jobs.set(drvPath, planned.get(drvPath) ?? (await this.options.planner.jobFor(drvPath)));
    const ended = await this.serial(async () => {
      const hashes = unique.map(hashPart);
      await this.options.records.addToRun(runId, hashes);
      const existing = await this.options.records.getMany(hashes);
      const toQueue: CheckRecord[] = [];
      for (const [i, drvPath] of unique.entries()) {
        const current = existing[i];
        if (current !== undefined && !isCheckEnded(current.state)) {
          // A check under way (a background sample, or another run's) answers this run too.
          if (!current.runs.includes(runId)) await this.options.records.put({ ...current, runs: [...current.runs, runId] });
          continue;
        }
        const record = this.newRecord(jobs.get(drvPath)!, { runs: [runId], background: false, priority });
        if (planned.has(drvPath)) await this.options.records.put(record);
        else toQueue.push(record);
      }
      return this.queueAll(await this.withBuilders(toQueue));
    });
    await this.finalizeRuns(ended);
  }

  /**
   * Builds that succeeded (applied by the report handler): their waiting
   * checks are queued, and a share of the others is sampled. Runs in the
   * background of the report handler: a check never delays a report.
   */
  afterBuilds(successes: ReadonlyArray<{ drvPath: string; worker: string }>): void {
    if (successes.length === 0) return;
    void this.serial(async () => {
      const hashes = successes.map((s) => hashPart(s.drvPath));
      const records = await this.options.records.getMany(hashes);
      const toQueue: CheckRecord[] = [];
      const sampled: Array<{ drvPath: string; worker: string }> = [];
      for (const [i, success] of successes.entries()) {
        const record = records[i];
        if (record?.state === 'waiting') toQueue.push({ ...record, builder: success.worker });
        else if ((record === undefined || isCheckEnded(record.state)) && this.fraction > 0 && (this.options.random ?? Math.random)() < this.fraction)
          sampled.push(success);
      }
      // The job each node was queued with: no .drv is read again for a sample.
      const nodes = await this.options.graph.nodes.readMany(
        sampled.map((s) => hashPart(s.drvPath)),
        ['job'],
      );
      for (const [i, s] of sampled.entries()) {
        const job = nodes[i]?.job ?? (await this.options.planner.jobFor(s.drvPath));
        toQueue.push({ ...this.newRecord(job, { runs: [], background: true, priority: 0 }), builder: s.worker });
      }
      return this.queueAll(toQueue);
    })
      .then((ended) => this.finalizeRuns(ended))
      .catch((error: unknown) => this.options.logger.warn({ err: error }, 'queueing reproducibility checks failed; the builds are not affected'));
  }

  /**
   * Asked by the run finalizer once a run's builds have all ended: its checks
   * still waiting are queued (their outputs are valid) or skipped (their
   * build did not succeed). Undefined: the run asked for no check.
   */
  async settleRun(runId: string): Promise<RunChecks | undefined> {
    const result = await this.serial(async () => {
      const records = await this.options.records.ofRun(runId);
      if (records.length === 0) return undefined;
      // Their builds have ended: those that succeeded are checked, the others have nothing to check.
      const waiting = records.filter((r) => r.state === 'waiting');
      await this.queueAll(await this.withBuilders(waiting), { invalid: 'its build did not succeed: there is nothing to check' });
      const now = await this.options.records.ofRun(runId);
      return {
        pending: now.filter((r) => !isCheckEnded(r.state)).length,
        failures: now.filter((r) => r.state === 'not-reproducible' || r.state === 'failed'),
      };
    });
    return result;
  }

  /** A cancelled run's checks that no one else needs are taken out of their queues. */
  async cancelRun(runId: string): Promise<void> {
    await this.serial(async () => {
      for (const record of await this.options.records.ofRun(runId)) {
        if (isCheckEnded(record.state)) continue;
        const runs = record.runs.filter((r) => r !== runId);
        if (runs.length > 0 || record.background) {
          await this.options.records.put({ ...record, runs });
          continue;
        }
        await this.options.queues.remove(record);
        await this.end(record, 'cancelled', { error: 'the run that asked for it was cancelled' }, false);
      }
    });
  }

  /** Reports of checks, in their order: a start, a hand-back, an end. */
  async handle(reports: readonly CheckReport[]): Promise<void> {
    const ended = await this.serial(async () => {
      const runs: string[] = [];
      for (const report of reports) runs.push(...(await this.apply(report)));
      return runs;
    });
    await this.finalizeRuns(ended);
  }

  async view(hash: string): Promise<CheckView | undefined> {
    const record = await this.options.records.get(hash);
    return record === undefined ? undefined : checkView(record, this.diffUrl);
  }

  /** The check a query means (a .drv path, an output path or a hash prefix). */
  async find(
    query: WhyQuery,
  ): Promise<{ kind: 'found'; check: CheckView } | { kind: 'not-found' } | { kind: 'ambiguous'; candidates: Candidate[]; total: number }> {
    const { records } = this.options;
    const matches =
      query.kind === 'drv-path'
        ? [await records.get(query.hash)].filter((r): r is CheckRecord => r !== undefined)
        : await records.find(query.kind === 'hash-prefix' ? { prefix: query.prefix } : { outputPath: query.path });
    if (matches.length === 0) return { kind: 'not-found' };
    if (matches.length > 1) {
      const candidates = matches.slice(0, 20).map((r) => ({ hash: r.hash, drvPath: r.drvPath, status: r.state }));
      return { kind: 'ambiguous', candidates, total: matches.length };
    }
    return { kind: 'found', check: checkView(matches[0]!, this.diffUrl) };
  }

  async ofRun(runId: string): Promise<CheckView[]> {
    return (await this.options.records.ofRun(runId)).map((r) => checkView(r, this.diffUrl));
  }

  async overview(limit = 20): Promise<{ counts: Record<CheckState, number>; fraction: number; recent: CheckView[]; mismatches: CheckView[] }> {
    const { records } = this.options;
    return {
      counts: await records.counts(),
      fraction: this.fraction,
      recent: (await records.newest(limit)).map((r) => checkView(r, this.diffUrl)),
      mismatches: (await records.newestMismatches(limit)).map((r) => checkView(r, this.diffUrl)),
    };
  }

  /**
   * Queues again what is queued (at start: a job that survived in BullMQ is
   * not added twice; periodically, with the runs' reconcile). A check whose
   * queue excludes its builder while no other live worker can take it any
   * more (the only other one left) is moved to a queue the builder serves,
   * so no check waits forever for a worker that is gone.
   */
  async resume(): Promise<void> {
    const ended = await this.serial(async () => {
      const queued = (await this.options.records.getMany(await this.options.records.active())).filter(
        (r): r is CheckRecord => r !== undefined && r.state === 'queued',
      );
      const stranded = await this.options.queues.stranded(queued);
      for (const record of queued.filter((r) => stranded.has(r.hash))) {
        this.options.logger.info({ drvPath: record.drvPath, excludedWorker: record.excludedWorker }, 'no other worker can take this check any more: moving it');
        await this.options.queues.remove(record);
      }
      return this.queueAll(queued, { again: true });
    });
    await this.finalizeRuns(ended);
  }

  private newRecord(job: BuildJob, how: { runs: string[]; background: boolean; priority: number }): CheckRecord {
    return {
      hash: hashPart(job.drvPath),
      drvPath: job.drvPath,
      name: derivationName(job.drvPath),
      system: job.system,
      state: 'waiting',
      background: how.background,
      runs: how.runs,
      attempts: 0,
      outputs: Object.entries(job.outputs).map(([name, path]) => ({ name, path })),
      job,
      priority: Math.max(1, 1001 - how.priority),
    };
  }

  /** Who built each record's outputs, as the graph remembers (the first accepted build: the coordinator kept its copy); unknown ones stay unknown. */
  private async withBuilders(records: readonly CheckRecord[]): Promise<CheckRecord[]> {
    if (records.length === 0) return [];
    const builders = await this.options.graph.builders(records.map((r) => r.hash));
    return records.map((r) => {
      const builder = builders.get(r.hash)?.[0];
      return builder === undefined ? r : { ...r, builder };
    });
  }

  /**
   * Queues checks, each against the coordinator's copy of its outputs (one
   * store query for all). A check whose outputs are not valid is skipped.
   * Returns the runs whose checks may all have ended.
   */
  private async queueAll(records: readonly CheckRecord[], how: { again?: boolean; invalid?: string } = {}): Promise<string[]> {
    if (records.length === 0) return [];
    const hashes = await this.options.narHashes(records.flatMap((r) => Object.values(r.job.outputs)));
    const ended: string[] = [];
    const ready: Array<{ record: CheckRecord; expected: Record<string, string> }> = [];
    for (const record of records) {
      const expected: Record<string, string> = {};
      for (const path of Object.values(record.job.outputs)) {
        const hash = hashes.get(path);
        if (hash !== undefined && hash !== '') expected[path] = hash;
      }
      if (Object.keys(expected).length === Object.keys(record.job.outputs).length) {
        ready.push({ record, expected });
        continue;
      }
      const why = how.invalid ?? 'its outputs are not valid in the coordinator store: there is nothing to compare with';
      ended.push(...(await this.end(record, 'skipped', { error: why })).runs);
    }
    const maxNarBytes = this.options.maxNarBytes ?? DEFAULT_MAX_NAR_BYTES;
    const placements = await this.options.queues.enqueueAll(
      ready.map(({ record, expected }) => ({ record, job: { build: record.job, expected, maxNarBytes, background: record.background } })),
    );
    for (const [i, { record, expected }] of ready.entries()) {
      const placement = placements[i]!;
      const { excludedWorker: _before, note: _said, ...rest } = record;
      await this.options.records.put({
        ...rest,
        state: 'queued',
        queue: placement.queue,
        jobId: placement.jobId,
        queuedAt: how.again === true ? (record.queuedAt ?? Date.now()) : Date.now(),
        outputs: record.outputs.map((o) => ({ name: o.name, path: o.path, ...(expected[o.path] === undefined ? {} : { expected: expected[o.path] }) })),
        ...(placement.excludedWorker === undefined ? {} : { excludedWorker: placement.excludedWorker }),
        ...(placement.note === undefined ? {} : { note: placement.note }),
      });
      this.options.logger.info(
        { drvPath: record.drvPath, queue: placement.queue, excludedWorker: placement.excludedWorker, background: record.background },
        'reproducibility check queued',
      );
    }
    return ended;
  }

  /** Returns the runs whose checks may all have ended with this report. */
  private async apply(report: CheckReport): Promise<string[]> {
    const { records, logger } = this.options;
    const hash = hashOfCheckJobId(report.jobId);
    const record = await records.get(hash);
    if (record === undefined || record.jobId !== report.jobId || isCheckEnded(record.state)) {
      logger.debug({ jobId: report.jobId, type: report.type }, 'stale check report ignored');
      return [];
    }
    switch (report.type) {
      case 'started': {
        const { error: _error, logTail: _tail, ...rest } = record;
        await records.put({ ...rest, state: 'running', checker: report.worker, startedAt: report.at, attempts: record.attempts + 1 });
        return [];
      }
      case 'handed-back':
        // Back in its queue under the same job id (the worker moved it there); the try does not count.
        await records.put({ ...record, state: 'queued', attempts: Math.max(0, record.attempts - 1) });
        return [];
      case 'check-finished':
        return (await this.finished(record, report)).runs;
    }
  }

  private async finished(record: CheckRecord, event: CheckFinishedEvent): Promise<CheckRecord> {
    const logTail = event.logTail.map(stripTerminalEscapes);
    const said = event.error === undefined ? '' : `: ${stripTerminalEscapes(event.error)}`;
    switch (event.outcome) {
      case 'succeeded':
        return this.judge({ ...record, logTail }, event);
      case 'cancelled':
        return this.end(record, 'cancelled', { error: `the rebuild on ${event.worker} was cancelled`, logTail });
      case 'aborted':
        if (event.retryable !== false && record.attempts < this.maxAttempts) {
          this.options.logger.info({ drvPath: record.drvPath, worker: event.worker, error: event.error }, 'check interrupted; queueing it again');
          await this.queueAll([{ ...record, error: `try ${record.attempts} on ${event.worker} stopped${said}`, logTail }]);
          return record;
        }
        return this.end(record, 'failed', { error: `the rebuild on ${event.worker} stopped${said} (try ${record.attempts} of ${this.maxAttempts})`, logTail });
      case 'failed':
      case 'timed-out':
      case 'log-limit-exceeded':
        return this.end(record, 'failed', { error: `the rebuild on ${event.worker} ${event.outcome === 'failed' ? 'failed' : event.outcome}${said}`, logTail });
    }
  }

  /** Compares the rebuild's NAR hashes with the coordinator's copy now; a difference is brought back and shown. */
  private async judge(record: CheckRecord, event: CheckFinishedEvent): Promise<CheckRecord> {
    const paths = Object.values(record.job.outputs);
    const kept = await this.options.narHashes(paths);
    const outputs = record.outputs.map((o) => {
      const expected = kept.get(o.path);
      const actual = event.narHashes?.[o.path];
      const differs = expected !== undefined && actual !== undefined && canonicalNarHash(expected) !== canonicalNarHash(actual);
      return { ...o, ...(expected === undefined ? {} : { expected }), ...(actual === undefined ? {} : { actual }), differs };
    });
    // Nix's check stops at the first output that differs: the outputs after it were not compared, which one difference outweighs.
    const unknown = outputs.filter((o) => o.expected === undefined || o.actual === undefined);
    if (unknown.length > 0 && !outputs.some((o) => o.differs)) {
      return this.end({ ...record, outputs }, 'failed', {
        error: `no NAR hash to compare for ${unknown.map((o) => o.path).join(' ')} (${event.worker} reported none, or the coordinator's copy is gone)`,
      });
    }
    if (!outputs.some((o) => o.differs)) return this.end({ ...record, outputs }, 'reproducible', {});
    let judged: CheckRecord = { ...record, outputs };
    if (this.options.inspector !== undefined) {
      try {
        judged = { ...judged, ...(await this.options.inspector.inspect(judged, event)) };
      } catch (error) {
        this.options.logger.warn({ err: error, drvPath: record.drvPath }, 'showing the difference failed; the mismatch is recorded by hash');
        judged = { ...judged, error: `the difference could not be shown: ${error instanceof Error ? error.message : String(error)}` };
      }
    }
    const differing = outputs.filter((o) => o.differs).map((o) => o.path);
    this.options.logger.warn({ drvPath: record.drvPath, builder: record.builder, checker: event.worker, differing }, 'not reproducible');
    return this.end(judged, 'not-reproducible', {});
  }

  /** Records the end, counts it, tells the runs that asked. */
  private async end(record: CheckRecord, state: EndedCheckState, how: { error?: string; logTail?: string[] }, tellRuns = true): Promise<CheckRecord> {
    const { error: _previous, ...rest } = record;
    const ended: CheckRecord = {
      ...rest,
      state,
      finishedAt: Date.now(),
      ...(how.error === undefined ? (state === 'not-reproducible' && record.error !== undefined ? { error: record.error } : {}) : { error: how.error }),
      ...(how.logTail === undefined ? {} : { logTail: how.logTail }),
    };
    await this.options.records.ended(ended);
    this.options.metrics?.checkEnded(state, record.background);
    if (tellRuns && ended.runs.length > 0) {
      await this.options.events.emit(ended.runs, {
        type: 'drv-checked',
        drvPath: ended.drvPath,
        state,
        ...(ended.checker === undefined ? {} : { worker: ended.checker }),
        ...(ended.error === undefined ? {} : { error: ended.error }),
        at: ended.finishedAt!,
      });
    }
    return ended;
  }

  /** A run whose builds all ended and whose checks now have is finalized (the finalizer asks settleRun again). */
  private async finalizeRuns(runIds: readonly string[]): Promise<void> {
    for (const runId of new Set(runIds)) {
      const run = await this.options.graph.run(runId, ['status', 'remaining']);
      if (run.status !== 'running' || (run.remaining ?? 0) > 0) continue;
      await this.options.finalize(runId);
    }
  }

  /** One change to the records at a time: reports, queueing and the finalizer's questions never interleave. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.chain.then(work, work);
    this.chain = next.catch(() => undefined);
    return next;
  }
}
