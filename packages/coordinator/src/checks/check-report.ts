import { isCheckJobId, type BuildHandedBackEvent, type BuildStartedEvent, type CheckFinishedEvent, type WorkerEvent } from '@nixfarm/shared';

/** A report about a reproducibility check rather than a build: its job id says so. */
export type CheckReport = BuildStartedEvent | BuildHandedBackEvent | CheckFinishedEvent;

export interface CheckReportSink {
  handle(reports: readonly CheckReport[]): Promise<void>;
  /** told of every accepted success (in the background: a check never delays a report) */
  afterBuilds(successes: ReadonlyArray<{ drvPath: string; worker: string }>): void;
}

export function isCheckReport(event: WorkerEvent): event is CheckReport {
  return event.type === 'check-finished' || isCheckJobId(event.jobId);
}
