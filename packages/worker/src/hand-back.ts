import type { Redis } from 'ioredis';
import { WorkerEventPublisher } from '@nixfarm/build';
import type { ReportSigner, WorkerEvent, WorkerOutcome } from '@nixfarm/shared';

/**
 * The builds and checks a worker gives back unfinished (it is leaving, its
 * Nix cannot build, or a background check yields to real work), by BullMQ job id. The
 * worker asks for a hand-back before it stops a build; the publisher turns
 * that build's interrupted report into a `handed-back` event; the job runner
 * then returns the job to its queue instead of completing it.
 */
export class HandBackRegistry {
  private readonly requested = new Map<string, string>();
  private readonly handedBack = new Set<string>();
  private handedBackTotal = 0;

  request(jobId: string, reason: string): void {
    this.requested.set(jobId, reason);
  }

  reasonFor(jobId: string): string | undefined {
    return this.requested.get(jobId);
  }

  /** Recorded when the handed-back event is out. */
  markHandedBack(jobId: string): void {
    if (!this.handedBack.has(jobId)) this.handedBackTotal++;
    this.handedBack.add(jobId);
  }

  /** Whether this job's build was handed back (the job must go back to its queue); forgets the job. */
  take(jobId: string): boolean {
    this.requested.delete(jobId);
    return this.handedBack.delete(jobId);
  }

  /** builds handed back since the worker started */
  get total(): number {
    return this.handedBackTotal;
  }
}

/**
 * Publishes worker events, except that the report of a build stopped for a
 * hand-back becomes a `handed-back` event: an interrupted build must not be
 * reported finished (it would count as cancelled or as a failed try). A build
 * that got to its end anyway (it was copying its outputs out) is reported as
 * usual.
 */
export class HandBackPublisher extends WorkerEventPublisher {
  constructor(
    redis: Redis,
    signer: ReportSigner,
    private readonly handBacks: HandBackRegistry,
  ) {
    super(redis, signer);
  }

  override async publish(event: WorkerEvent): Promise<void> {
    // A reproducibility check's end (check-finished) is handed back like a build's.
    const ended = event.type === 'finished' || event.type === 'check-finished';
    const reason = ended ? this.handBacks.reasonFor(event.jobId) : undefined;
    if (!ended || reason === undefined || !interrupted(event.outcome)) return super.publish(event);
    await super.publish({
      type: 'handed-back',
      drvPath: event.drvPath,
      worker: event.worker,
      jobId: event.jobId,
      attempt: event.attempt,
      reason,
      at: event.at,
    });
    this.handBacks.markHandedBack(event.jobId);
  }
}

/** Outcomes of a build that was stopped before it got to an answer; every other outcome is the build's own. */
function interrupted(outcome: WorkerOutcome): boolean {
  switch (outcome) {
    case 'cancelled':
    case 'aborted':
      return true;
    case 'succeeded':
    case 'failed':
    case 'timed-out':
    case 'log-limit-exceeded':
      return false;
  }
}
