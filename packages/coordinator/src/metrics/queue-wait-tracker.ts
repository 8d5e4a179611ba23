/** A job this coordinator queued, and since when it may start. */
export interface QueuedJob {
  queue: string;
  /** when it became takeable: queued time plus any retry back-off */
  since: number;
}

/**
 * When each job this process queued became takeable, kept in memory so that a
 * start report yields its queue wait with no Redis read and a scrape finds
 * the oldest waiting job per queue without walking BullMQ's sorted sets.
 * After a restart, jobs count from when the restarted coordinator re-queued
 * them. Entries leave on start or removal; a scrape that finds a queue empty
 * drops what is left for it, so nothing accumulates.
 */
export class QueueWaitTracker {
  private readonly jobs = new Map<string, QueuedJob>();

  /** Re-queueing a job it already tracks (the periodic reconcile re-adds every queued job) keeps the first time. */
  queued(jobs: ReadonlyArray<{ jobId: string; queue: string; since: number }>): void {
    for (const j of jobs) if (!this.jobs.has(j.jobId)) this.jobs.set(j.jobId, { queue: j.queue, since: j.since });
  }

  /** The job started (or left its queue): what it was, if this process queued it. */
  take(jobId: string): QueuedJob | undefined {
    const job = this.jobs.get(jobId);
    this.jobs.delete(jobId);
    return job;
  }

  /** Oldest takeable time per queue, among jobs not started yet. */
  oldest(now: number): Map<string, number> {
    const out = new Map<string, number>();
    for (const { queue, since } of this.jobs.values()) {
      if (since > now) continue;
      const current = out.get(queue);
      if (current === undefined || since < current) out.set(queue, since);
    }
    return out;
  }

  /** A queue BullMQ says is empty has nothing waiting: forget what is left for it. */
  forgetQueue(queue: string): void {
    for (const [id, job] of this.jobs) if (job.queue === queue) this.jobs.delete(id);
  }
}
