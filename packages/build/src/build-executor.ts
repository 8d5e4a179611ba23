import type { Redis } from 'ioredis';
import { NixSetupError, type BuildJob, type BuildTimings, type Logger, type ReportSigner, type WorkerOutcome } from '@nixfarm/shared';
import { LogStreamer } from './log-streamer.js';
import type { DerivationBuilder } from './derivation-builder.js';
import type { WorkerEventPublisher } from './worker-event-publisher.js';
import { LogTail } from './log-tail.js';
import { abortedAttempt } from './aborted-attempt.js';
import type { OutputHashes } from './output-hashes.js';
import type { ByteTally } from './byte-tally.js';

/** Moves paths in and out of the store that builds; a builder on the coordinator's own store moves nothing. */
export interface PathMover {
  /** `tally`, when given, gets the bytes streamed: reported with the timings for the coordinator's metrics */
  copyIn(paths: readonly string[], tally?: ByteTally): Promise<unknown>;
  copyOut(paths: readonly string[], tally?: ByteTally): Promise<unknown>;
}

export const SAME_STORE: PathMover = {
  copyIn: async () => 0,
  copyOut: async () => undefined,
};

export interface BuildExecutorDeps {
  workerName: string;
  builder: DerivationBuilder;
  mover: PathMover;
  publisher: WorkerEventPublisher;
  logger: Logger;
  /** NAR hashes of the outputs in the building store, reported with a success; absent: none are reported */
  outputHashes?: OutputHashes;
  /** streams each build's log live to Redis, for the coordinator to follow and store; absent: only the tail travels in the report */
  logStream?: { redis: Redis; signer: ReportSigner; maxBytes?: number };
  /**
   * Awaited once the build and its copy-out are over, right before the finished
   * report goes out: the worker advertises the slot free here, so the work this
   * report releases never finds the worker busy in the registry. Must not throw.
   */
  beforeReport?: (jobId: string) => Promise<void>;
  /**
   * Told, before the report goes out, that the building Nix cannot build at
   * all (NixSetupError): a worker hands the build back and pauses, the
   * coordinator says so once. The report is `aborted` and not retryable.
   */
  onNixSetupError?: (error: NixSetupError, build: { jobId: string; drvPath: string }) => void;
}

/** Lines of log kept for the report on failure. */
const FAILURE_LOG_LINES = 50;
/** Lines of log kept for the report on success. */
const SUCCESS_LOG_LINES = 10;

interface Attempt {
  outcome: WorkerOutcome;
  outputs?: Record<string, string>;
  narHashes?: Record<string, string>;
  error?: string;
  errorCode?: string;
  retryable?: boolean;
}

/**
 * Builds one derivation and reports it: copy in what is missing, build
 * exactly that derivation, copy every output back. A builder failure is
 * `failed` (never retried); anything else that goes wrong is `aborted` (the
 * coordinator retries it with back-off).
 */
export class BuildExecutor {
  constructor(private readonly deps: BuildExecutorDeps) {}

  async execute(build: BuildJob, job: { jobId: string; attempt: number; signal?: AbortSignal }): Promise<WorkerOutcome> {
    const { logger, publisher, workerName } = this.deps;
    const started = Date.now();
    const log = new LogTail(FAILURE_LOG_LINES);
    const stream =
      this.deps.logStream === undefined
        ? undefined
        : new LogStreamer({ ...this.deps.logStream, logger, drvPath: build.drvPath, worker: workerName, jobId: job.jobId, attempt: job.attempt });
    const timings: BuildTimings = { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 };
    let result: Attempt;
    try {
      await publisher.publish({ type: 'started', drvPath: build.drvPath, worker: workerName, jobId: job.jobId, attempt: job.attempt, at: started });
      result = await this.build(
        build,
        (line) => {
          log.push(line);
          stream?.push(line);
        },
        timings,
        job.signal,
      );
    } catch (error) {
      result = abortedAttempt(error);
      if (error instanceof NixSetupError) this.deps.onNixSetupError?.(error, { jobId: job.jobId, drvPath: build.drvPath });
    }
    // The whole log is in Redis before the report: the coordinator stores it when it applies the report.
    await stream?.end(result.outcome);
    timings.totalMs = Date.now() - started;
    const tail = log.toArray();
    await this.deps.beforeReport?.(job.jobId);
    await publisher.publish({
      type: 'finished',
      drvPath: build.drvPath,
      worker: workerName,
      jobId: job.jobId,
      attempt: job.attempt,
      outcome: result.outcome,
      system: build.system,
      ...(result.outputs === undefined ? {} : { outputs: result.outputs }),
      ...(result.narHashes === undefined ? {} : { narHashes: result.narHashes }),
      ...(result.error === undefined ? {} : { error: result.error }),
      ...(result.errorCode === undefined ? {} : { errorCode: result.errorCode }),
      ...(result.retryable === undefined ? {} : { retryable: result.retryable }),
      logTail: result.outcome === 'succeeded' ? tail.slice(-SUCCESS_LOG_LINES) : tail,
      ...(stream?.hasStreamed === true ? { logStreamed: true } : {}),
      timings,
      at: Date.now(),
    });
    logger.info({ drvPath: build.drvPath, outcome: result.outcome, ...timings, error: result.error, errorCode: result.errorCode }, 'build finished');
    return result.outcome;
  }

  private async build(build: BuildJob, onLogLine: (line: string) => void, timings: BuildTimings, signal: AbortSignal | undefined): Promise<Attempt> {
    const { builder, mover } = this.deps;
    let t = Date.now();
    const copiedIn: ByteTally = { bytes: 0 };
    await mover.copyIn(build.inputPaths, copiedIn);
    timings.copyInMs = Date.now() - t;
    timings.copyInBytes = copiedIn.bytes;

    t = Date.now();
    const attempt = await builder.build(build, { onLogLine, signal });
    timings.buildMs = Date.now() - t;
    if (signal?.aborted) return { outcome: 'cancelled', error: `build of ${build.drvPath} cancelled` };
    if (attempt.status !== 'succeeded')
      return { outcome: attempt.status, error: attempt.error, ...(attempt.errorCode === undefined ? {} : { errorCode: attempt.errorCode, retryable: false }) };

    // Reported only once every output is valid in the coordinator's store: dependents are released on this report.
    t = Date.now();
    const copiedOut: ByteTally = { bytes: 0 };
    await mover.copyOut(Object.values(build.outputs), copiedOut);
    timings.copyOutMs = Date.now() - t;
    timings.copyOutBytes = copiedOut.bytes;
    return { outcome: 'succeeded', outputs: build.outputs, ...(await this.narHashes(build)) };
  }

  /** The outputs' NAR hashes: a check for the coordinator, never a reason to fail a build that is done and copied. */
  private async narHashes(build: BuildJob): Promise<{ narHashes?: Record<string, string> }> {
    if (this.deps.outputHashes === undefined) return {};
    try {
      const hashes = await this.deps.outputHashes(Object.values(build.outputs));
      return Object.keys(hashes).length === 0 ? {} : { narHashes: hashes };
    } catch (error) {
      this.deps.logger.warn({ drvPath: build.drvPath, err: error }, 'could not read the NAR hashes of the outputs; reporting without them');
      return {};
    }
  }
}
