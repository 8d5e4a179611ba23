import { UnrecoverableError, type Job } from 'bullmq';
import {
  NixfarmError,
  buildJobSchema,
  formatZodError,
  type BuildJob,
  type BuildTimings,
  type Logger,
  type WorkerOutcome,
} from '@nixfarm/shared';
import type { WorkerNix } from './worker-nix.js';
import { NIX_BUILD_FAILED, NIX_TIMED_OUT_FLAG } from './worker-nix.js';
import type { StoreCopier } from './store-copier.js';
import type { WorkerEventPublisher } from './worker-event-publisher.js';
import { LogTail } from './log-tail.js';

export interface JobRunnerDeps {
  workerName: string;
  nix: WorkerNix;
  copier: StoreCopier;
  publisher: WorkerEventPublisher;
  logger: Logger;
  /** how long a job's lock lasts; renewed at half of it while the build runs */
  lockDurationMs: number;
}

/** Lines of log kept for the report on failure. */
const FAILURE_LOG_LINES = 50;
/** Lines of log kept for the report on success. */
const SUCCESS_LOG_LINES = 10;

interface Attempt {
  outcome: WorkerOutcome;
  outputs?: Record<string, string>;
  exitCode?: number;
  error?: string;
}

/**
 * Builds one job: copy in what is missing, realise exactly that derivation,
 * copy every output back, report. A builder failure is reported as `failed`
 * (never retried); anything else that goes wrong is `aborted` (the
 * coordinator retries it with back-off).
 */
export class JobRunner {
  constructor(private readonly deps: JobRunnerDeps) {}

  async run(job: Job, token: string): Promise<void> {
    const { logger, publisher, workerName } = this.deps;
    const parsed = buildJobSchema.safeParse(job.data);
    if (!parsed.success) {
      // A malformed payload can never succeed: fail that job with the reason, keep the worker going.
      const message = formatZodError(parsed.error, `build job ${job.id ?? '?'} payload`);
      logger.error({ jobId: job.id, problem: message }, 'malformed job rejected');
      await job.moveToFailed(new UnrecoverableError(message), token, false);
      return;
    }
    const build = parsed.data;
    const attempt = job.attemptsStarted ?? 0;
    const renew = setInterval(() => {
      job.extendLock(token, this.deps.lockDurationMs).catch((err: unknown) => logger.warn({ err, drvPath: build.drvPath }, 'lock renewal failed'));
    }, Math.max(1000, Math.floor(this.deps.lockDurationMs / 2)));
    const started = Date.now();
    const log = new LogTail(FAILURE_LOG_LINES);
    const timings: BuildTimings = { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 };
    let result: Attempt;
    try {
      await publisher.publish({ type: 'started', drvPath: build.drvPath, worker: workerName, jobId: String(job.id), attempt, at: started });
      result = await this.build(build, log, timings);
    } catch (error) {
      result = { outcome: 'aborted', error: error instanceof Error ? error.message : String(error) };
    } finally {
      clearInterval(renew);
    }
    timings.totalMs = Date.now() - started;
    const tail = log.toArray();
    await publisher.publish({
      type: 'finished',
      drvPath: build.drvPath,
      worker: workerName,
      jobId: String(job.id),
      attempt,
      outcome: result.outcome,
      ...(result.outputs === undefined ? {} : { outputs: result.outputs }),
      ...(result.exitCode === undefined ? {} : { exitCode: result.exitCode }),
      ...(result.error === undefined ? {} : { error: result.error }),
      logTail: result.outcome === 'succeeded' ? tail.slice(-SUCCESS_LOG_LINES) : tail,
      timings,
      at: Date.now(),
    });
    logger.info({ drvPath: build.drvPath, outcome: result.outcome, ...timings, error: result.error }, 'build finished');
    // The report is in the stream before the job leaves BullMQ: a crash in between re-runs the job, never loses the result.
    await job.moveToCompleted(result.outcome, token, false);
  }

  private async build(build: BuildJob, log: LogTail, timings: BuildTimings): Promise<Attempt> {
    const { nix, copier } = this.deps;
    let t = Date.now();
    await copier.copyIn([build.drvPath, ...build.inputPaths]);
    timings.copyInMs = Date.now() - t;

    t = Date.now();
    const realised = await nix.realise(build.drvPath, {
      timeoutSeconds: build.timeoutSeconds,
      maxSilentSeconds: build.maxSilentSeconds,
      onLogLine: (line) => log.push(line),
    });
    timings.buildMs = Date.now() - t;
    if (realised.exitCode !== 0) {
      const timedOut = realised.exitCode >= NIX_BUILD_FAILED && realised.exitCode < NIX_BUILD_FAILED + 8 && (realised.exitCode - NIX_BUILD_FAILED) & NIX_TIMED_OUT_FLAG;
      return {
        outcome: timedOut ? 'timed-out' : 'failed',
        exitCode: realised.exitCode,
        error: `builder for ${build.drvPath} failed with nix exit code ${realised.exitCode}`,
      };
    }
    const expected = Object.values(build.outputs);
    const missing = expected.filter((p) => !realised.outputPaths.includes(p));
    if (missing.length > 0) {
      throw new NixfarmError('unexpected-outputs', `nix-store --realise did not produce the expected outputs ${missing.join(' ')} (got ${realised.outputPaths.join(' ') || 'nothing'})`, { retryable: true });
    }

    t = Date.now();
    await copier.copyOut(expected);
    timings.copyOutMs = Date.now() - t;
    return { outcome: 'succeeded', outputs: build.outputs };
  }
}
