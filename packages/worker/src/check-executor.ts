import { chmod, lstat, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { LogTail, abortedAttempt, type ByteTally, type PathMover, type WorkerEventPublisher } from '@nixfarm/build';
import {
  InfrastructureError,
  NixSetupError,
  classifyNixBuildFailure,
  hashPart,
  redisKeys,
  stripTerminalEscapes,
  type BuildTimings,
  type CheckJob,
  type CheckNar,
  type Logger,
  type NixBuildStatus,
  type WorkerOutcome,
} from '@nixfarm/shared';
import { digestNar, sameNarHash, sendNar } from './rebuilt-nar.js';
import type { WorkerNix } from './worker-nix.js';

export interface CheckExecutorDeps {
  workerName: string;
  /** runs `nix-store --realise --check` and `nix-store --dump` with the worker's Nix options */
  nix: WorkerNix;
  /** copies the .drv, the inputs and the coordinator's outputs in */
  mover: Pick<PathMover, 'copyIn'>;
  /** the same stream as builds (a HandBackPublisher, so a stopped check is handed back) */
  publisher: WorkerEventPublisher;
  /** where differing outputs' NARs go (redisKeys.checkNar) */
  redis: Redis;
  logger: Logger;
  /** as BuildExecutorDeps.beforeReport: the slot is advertised free before the report goes out. Must not throw. */
  beforeReport?: (jobId: string) => Promise<void>;
  /** as BuildExecutorDeps.onNixSetupError: this Nix cannot build at all */
  onNixSetupError?: (error: NixSetupError, check: { jobId: string; drvPath: string }) => void;
}

/** Lines of the rebuild's log that travel in the report (the contract's limit). */
const LOG_TAIL_LINES = 50;
/** what Nix 2.8 prints when --keep-failed keeps a build directory */
const KEPT_BUILD_DIR = /^note: keeping build directory '([^']*\/nix-build-[^/']+)'$/;
/** Nix's exit status bits (libstore/build/worker.cc, Worker::exitStatus): 0x60 marks a build status */
const EXIT_BUILD_STATUS = 0x60;
const EXIT_TIMED_OUT = 0x01;
const EXIT_HASH_MISMATCH = 0x02;
const EXIT_BUILD_FAILURE = 0x04;
const EXIT_CHECK_MISMATCH = 0x08;
/** Nix 2.8's message for a build stopped at max-log-size (it has no exit status bit of its own) */
const LOG_LIMIT_MESSAGE = /killed after writing more than \d+ bytes of log output/;

interface CheckResult {
  outcome: WorkerOutcome;
  narHashes?: Record<string, string>;
  nars?: Record<string, CheckNar>;
  error?: string;
  errorCode?: string;
  retryable?: boolean;
}

/**
 * Runs one reproducibility check: copies in the derivation, its inputs and
 * the coordinator's copy of its outputs, builds it again in Nix's check
 * mode, hashes each rebuilt output's NAR, sends the NAR of each one that
 * differs back through Redis, removes what Nix left behind, and reports
 * `check-finished`. Never throws: a fault is the outcome `aborted`, its
 * code and retryability as data.
 */
export class CheckExecutor {
  constructor(private readonly deps: CheckExecutorDeps) {}

  async execute(check: CheckJob, job: { jobId: string; attempt: number; signal?: AbortSignal }): Promise<WorkerOutcome> {
    const { logger, publisher, workerName } = this.deps;
    const { build } = check;
    const started = Date.now();
    const log = new LogTail(LOG_TAIL_LINES);
    const keptDirs = new Set<string>();
    const timings: BuildTimings = { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 };
    const outputs = Object.values(build.outputs);
    let result: CheckResult;
    try {
      await publisher.publish({ type: 'started', drvPath: build.drvPath, worker: workerName, jobId: job.jobId, attempt: job.attempt, at: started });
      // A `.check` tree an earlier, interrupted check left would be taken for this rebuild's.
      await this.removeChecks(outputs);
      result = await this.check(
        check,
        job,
        (line) => {
          const kept = KEPT_BUILD_DIR.exec(line);
          if (kept !== null) keptDirs.add(kept[1]!);
          log.push(line);
        },
        log,
        timings,
      );
    } catch (error) {
      result = abortedAttempt(error);
      if (error instanceof NixSetupError) this.deps.onNixSetupError?.(error, { jobId: job.jobId, drvPath: build.drvPath });
    }
    await this.cleanUp(outputs, keptDirs);
    timings.totalMs = Date.now() - started;
    await this.deps.beforeReport?.(job.jobId);
    await publisher.publish({
      type: 'check-finished',
      drvPath: build.drvPath,
      worker: workerName,
      jobId: job.jobId,
      attempt: job.attempt,
      outcome: result.outcome,
      ...(result.narHashes === undefined ? {} : { narHashes: result.narHashes }),
      ...(result.nars === undefined ? {} : { nars: result.nars }),
      logTail: log.toArray(),
      ...(result.error === undefined ? {} : { error: result.error }),
      ...(result.errorCode === undefined ? {} : { errorCode: result.errorCode }),
      ...(result.retryable === undefined ? {} : { retryable: result.retryable }),
      timings,
      at: Date.now(),
    });
    logger.info(
      { drvPath: build.drvPath, jobId: job.jobId, outcome: result.outcome, differing: Object.keys(result.nars ?? {}), ...timings, error: result.error },
      'check finished',
    );
    return result.outcome;
  }

  private async check(
    check: CheckJob,
    job: { jobId: string; signal?: AbortSignal },
    onLogLine: (line: string) => void,
    log: LogTail,
    timings: BuildTimings,
  ): Promise<CheckResult> {
    const { build } = check;
    const outputs = Object.values(build.outputs);
    const cancelled = (): CheckResult => ({ outcome: 'cancelled', error: `check of ${build.drvPath} cancelled` });
    // a function: the signal may fire during any await below
    const aborted = (): boolean => job.signal?.aborted === true;
    let t = Date.now();
    const copiedIn: ByteTally = { bytes: 0 };
    // Check mode needs the .drv valid here, and compares with the coordinator's outputs: those must be the valid ones.
    await this.deps.mover.copyIn([build.drvPath, ...build.inputPaths, ...outputs], copiedIn);
    timings.copyInMs = Date.now() - t;
    timings.copyInBytes = copiedIn.bytes;
    if (aborted()) return cancelled();

    t = Date.now();
    const realised = await this.deps.nix.realiseCheck(build.drvPath, {
      ...(build.timeoutSeconds === undefined ? {} : { timeoutSeconds: build.timeoutSeconds }),
      ...(build.maxSilentSeconds === undefined ? {} : { maxSilentSeconds: build.maxSilentSeconds }),
      onLogLine: (line) => onLogLine(stripTerminalEscapes(line)),
      ...(job.signal === undefined ? {} : { signal: job.signal }),
    });
    timings.buildMs = Date.now() - t;
    if (realised.cancelled || aborted()) return cancelled();
    const verdict = this.verdict(build.drvPath, realised.exitCode, log.toArray());
    if (verdict !== undefined) return verdict;

    // The rebuild ran to its end: hash what it made, and send back what differs.
    t = Date.now();
    const narHashes: Record<string, string> = {};
    const nars: Record<string, CheckNar> = {};
    for (const out of outputs) {
      const rebuilt = await this.rebuiltTree(out, realised.exitCode === 0);
      if (rebuilt === undefined) {
        // Nix stops at the first output that differs: the outputs it had not compared yet have no rebuild to read.
        this.deps.logger.info({ drvPath: build.drvPath, output: out }, 'Nix stopped the check before comparing this output; its hash is not reported');
        continue;
      }
      const digest = await digestNar(this.deps.nix, rebuilt);
      narHashes[out] = digest.narHash;
      const expected = check.expected[out];
      if (expected === undefined || sameNarHash(expected, digest.sha256)) continue;
      nars[out] = await this.sendBack(check, job.jobId, out, rebuilt, digest.bytes);
    }
    timings.copyOutMs = Date.now() - t;
    return { outcome: 'succeeded', narHashes, ...(Object.keys(nars).length === 0 ? {} : { nars }) };
  }

  /**
   * Nix's exit code as the check's outcome, or undefined when the rebuild
   * ran to its end (0: the same bits; 104: some output differs).
   */
  private verdict(drvPath: string, exitCode: number | undefined, tail: readonly string[]): CheckResult | undefined {
    if (exitCode === 0) return undefined;
    if (exitCode === undefined) throw new InfrastructureError('build-not-done', `nix-store --realise --check of ${drvPath} was killed:\n${tail.join('\n')}`);
    const message = nixError(tail) || `nix-store --realise --check of ${drvPath} exited with ${exitCode}`;
    const isBuildStatus = (exitCode & EXIT_BUILD_STATUS) === EXIT_BUILD_STATUS && exitCode <= 0x6f;
    if (isBuildStatus && (exitCode & EXIT_TIMED_OUT) !== 0) return { outcome: 'timed-out', error: message };
    if (isBuildStatus && exitCode === (EXIT_BUILD_STATUS | EXIT_CHECK_MISMATCH)) return undefined;
    if (LOG_LIMIT_MESSAGE.test(message)) return { outcome: 'log-limit-exceeded', error: message };
    // Which of Nix's build statuses the exit code stands for, so the shared rules say whose fault it is.
    const status: NixBuildStatus =
      isBuildStatus && (exitCode & EXIT_HASH_MISMATCH) !== 0
        ? 'OutputRejected'
        : isBuildStatus && (exitCode & EXIT_BUILD_FAILURE) !== 0
          ? 'PermanentFailure'
          : 'MiscFailure';
    const failure = classifyNixBuildFailure(status, message);
    switch (failure.kind) {
      case 'derivation':
        return { outcome: 'failed', error: failure.message, errorCode: failure.code, retryable: false };
      case 'machine':
        throw new NixSetupError({
          nix: `worker ${this.deps.workerName}'s Nix`,
          code: failure.code,
          nixMessage: failure.message,
          fix: failure.fix ?? 'fix what Nix says',
        });
      case 'transient':
        throw new InfrastructureError('build-not-done', `Nix could not check ${drvPath} (exit code ${exitCode}): ${failure.message}`);
    }
  }

  /** Where the rebuild of `out` is: `<out>.check` when it differs, `out` itself when Nix found it the same; undefined when Nix never compared it. */
  private async rebuiltTree(out: string, allSame: boolean): Promise<string | undefined> {
    const check = checkPath(out);
    if (await exists(check)) return check;
    return allSame ? out : undefined;
  }

  private async sendBack(check: CheckJob, jobId: string, out: string, rebuilt: string, bytes: number): Promise<CheckNar> {
    if (bytes > check.maxNarBytes) {
      return { skipped: `its NAR is ${bytes} bytes, more than the coordinator's limit of ${check.maxNarBytes} (--check-max-nar-bytes)`, bytes };
    }
    try {
      return await sendNar(this.deps.nix, this.deps.redis, redisKeys.checkNar(jobId, hashPart(out)), rebuilt);
    } catch (error) {
      // The hashes are the check's answer; a NAR that could not be sent only leaves the difference unexplained.
      this.deps.logger.warn({ err: error, output: out, jobId }, "could not send a differing output's NAR; reporting it as skipped");
      return { skipped: `it could not be sent: ${error instanceof Error ? error.message : String(error)}`.slice(0, 1000), bytes };
    }
  }

  /** Removes every `.check` tree and kept build directory of this check: they are ours, and no store path. Logs, never throws. */
  private async cleanUp(outputs: readonly string[], keptDirs: ReadonlySet<string>): Promise<void> {
    try {
      await this.removeChecks(outputs);
      for (const dir of keptDirs) await removeTree(dir);
    } catch (error) {
      this.deps.logger.warn({ err: error, outputs, keptDirs: [...keptDirs] }, "could not remove a check's leftovers");
    }
  }

  private async removeChecks(outputs: readonly string[]): Promise<void> {
    for (const out of outputs) await removeTree(checkPath(out));
  }
}

/** Nix's `<output>.check`: where --check --keep-failed leaves a differing rebuild (beside the output, in this worker's store). */
function checkPath(out: string): string {
  return `${out}.check`;
}

/** Nix's error: its last `error:` line and what follows it. */
function nixError(tail: readonly string[]): string {
  let start = -1;
  for (let i = tail.length - 1; i >= 0; i--) {
    if (tail[i]!.startsWith('error:')) {
      start = i;
      break;
    }
  }
  return (start === -1 ? tail.slice(-10) : tail.slice(start)).join('\n').trim();
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** rm -rf, after making directories writable: Nix leaves a rebuilt tree read-only, and a user that is not root cannot empty it then. */
async function removeTree(p: string): Promise<void> {
  if (!(await exists(p))) return;
  await makeWritable(p);
  await rm(p, { recursive: true, force: true });
}

async function makeWritable(p: string): Promise<void> {
  const stat = await lstat(p);
  if (!stat.isDirectory()) return;
  await chmod(p, (stat.mode & 0o7777) | 0o700);
  for (const entry of await readdir(p)) await makeWritable(path.join(p, entry));
}
