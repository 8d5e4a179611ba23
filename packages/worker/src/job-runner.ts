import { UnrecoverableError, type Job } from 'bullmq';
import type { BuildExecutor } from '@nixfarm/build';
import { buildJobSchema, formatZodError, type Logger } from '@nixfarm/shared';
import type { HandBackRegistry } from './hand-back.js';

export interface JobRunnerDeps {
  executor: BuildExecutor;
  logger: Logger;
  /** how long a job's lock lasts; renewed at half of it while the build runs */
  lockDurationMs: number;
  /** builds a leaving worker gave back: their jobs return to the queue instead of completing */
  handBacks?: HandBackRegistry;
}

/** Runs one BullMQ job: validates its payload, keeps its lock while building, and completes it after the report. */
export class JobRunner {
  constructor(private readonly deps: JobRunnerDeps) {}

  async run(job: Job, token: string, signal?: AbortSignal): Promise<void> {
    const { logger } = this.deps;
    // reportInput: the message repeats the rejected value (cut short), so the bad path is named.
    const parsed = buildJobSchema.safeParse(job.data, { reportInput: true });
    if (!parsed.success) {
      // A malformed payload can never succeed: fail that job with the reason, keep the worker going.
      const message = formatZodError(parsed.error, `build job ${job.id ?? '?'} payload`);
      logger.error({ jobId: job.id, problem: message }, 'malformed job rejected');
      await job.moveToFailed(new UnrecoverableError(message), token, false);
      return;
    }
    const build = parsed.data;
    const renew = setInterval(
      () => {
        job.extendLock(token, this.deps.lockDurationMs).catch((err: unknown) => logger.warn({ err, drvPath: build.drvPath }, 'lock renewal failed'));
      },
      Math.max(1000, Math.floor(this.deps.lockDurationMs / 2)),
    );
    let outcome;
    try {
      outcome = await this.deps.executor.execute(build, { jobId: String(job.id), attempt: job.attemptsStarted ?? 0, signal });
    } finally {
      clearInterval(renew);
    }
    if (this.deps.handBacks?.take(String(job.id)) === true) {
      // Back to its queue under the same id, for another worker at once. The handed-back report is in the stream
      // before the job can be taken again, so the coordinator applies it before another worker's start.
      // A lost lock refuses this: BullMQ's stalled check returns the job then.
      await job.moveToWait(token);
      logger.info({ drvPath: build.drvPath, jobId: job.id }, 'build handed back to its queue');
      return;
    }
    // The report is in the stream before the job leaves BullMQ: a crash in between re-runs the job, never loses the result.
    await job.moveToCompleted(outcome, token, false);
  }
}
