import { UnrecoverableError, type Job } from 'bullmq';
import type { BuildExecutor } from '@nixfarm/build';
import { buildJobSchema, checkJobSchema, formatZodError, isCheckJobId, type Logger, type WorkerOutcome } from '@nixfarm/shared';
import type { HandBackRegistry } from './hand-back.js';
import type { CheckExecutor } from './check-executor.js';

export interface JobRunnerDeps {
  executor: BuildExecutor;
  /** runs reproducibility checks (jobs whose id isCheckJobId); absent: such a job fails with a message saying this worker runs none */
  checks?: CheckExecutor;
  logger: Logger;
  /** how long a job's lock lasts; renewed at half of it while the build runs */
  lockDurationMs: number;
  /** builds a leaving worker gave back: their jobs return to the queue instead of completing */
  handBacks?: HandBackRegistry;
}

type JobContext = { jobId: string; attempt: number; signal?: AbortSignal };

/** A job's payload, validated: what it builds, and how to run it. */
type Task = { drvPath: string; kind: 'build' | 'check'; execute: (job: JobContext) => Promise<WorkerOutcome> };

/**
 * Runs one BullMQ job, a build or a reproducibility check (by its id):
 * validates its payload, keeps its lock while it runs, and completes it
 * after the report.
 */
export class JobRunner {
  constructor(private readonly deps: JobRunnerDeps) {}

  async run(job: Job, token: string, signal?: AbortSignal): Promise<void> {
    const { logger } = this.deps;
    const jobId = String(job.id);
    const task = this.task(job);
    if (typeof task === 'string') {
      // A malformed payload can never succeed: fail that job with the reason, keep the worker going.
      logger.error({ jobId: job.id, problem: task }, 'malformed job rejected');
      await job.moveToFailed(new UnrecoverableError(task), token, false);
      return;
    }
    const renew = setInterval(
      () => {
        job.extendLock(token, this.deps.lockDurationMs).catch((err: unknown) => logger.warn({ err, drvPath: task.drvPath }, 'lock renewal failed'));
      },
      Math.max(1000, Math.floor(this.deps.lockDurationMs / 2)),
    );
    let outcome;
    try {
      outcome = await task.execute({ jobId, attempt: job.attemptsStarted ?? 0, signal });
    } finally {
      clearInterval(renew);
    }
    if (this.deps.handBacks?.take(jobId) === true) {
      // Back to its queue under the same id, for another worker at once. The handed-back report is in the stream
      // before the job can be taken again, so the coordinator applies it before another worker's start.
      // A lost lock refuses this: BullMQ's stalled check returns the job then.
      await job.moveToWait(token);
      logger.info({ drvPath: task.drvPath, jobId: job.id }, `${task.kind} handed back to its queue`);
      return;
    }
    // The report is in the stream before the job leaves BullMQ: a crash in between re-runs the job, never loses the result.
    await job.moveToCompleted(outcome, token, false);
  }

  /** The job's task, or why its payload is refused. */
  private task(job: Job): Task | string {
    // reportInput: the message repeats the rejected value (cut short), so the bad path is named.
    if (isCheckJobId(String(job.id))) {
      const checks = this.deps.checks;
      if (checks === undefined) return `check job ${job.id}: this worker runs no reproducibility checks`;
      const parsed = checkJobSchema.safeParse(job.data, { reportInput: true });
      if (!parsed.success) return formatZodError(parsed.error, `check job ${job.id} payload`);
      const check = parsed.data;
      return { drvPath: check.build.drvPath, kind: 'check', execute: (context) => checks.execute(check, context) };
    }
    const parsed = buildJobSchema.safeParse(job.data, { reportInput: true });
    if (!parsed.success) return formatZodError(parsed.error, `build job ${job.id ?? '?'} payload`);
    const build = parsed.data;
    return { drvPath: build.drvPath, kind: 'build', execute: (context) => this.deps.executor.execute(build, context) };
  }
}
