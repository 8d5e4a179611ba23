/**
 * Hydra's build status taxonomy, which operators already know, plus the
 * states a derivation passes through before it ends.
 */
export const PENDING_STATUSES = ['waiting', 'queued', 'running'] as const;
export const TERMINAL_STATUSES = [
  'succeeded',
  'failed',
  'dependency-failed',
  'aborted',
  'cancelled',
  'timed-out',
  'log-limit-exceeded',
  'output-limit-exceeded',
  'cached-failure',
  'unsupported',
] as const;

export type PendingStatus = (typeof PENDING_STATUSES)[number];
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];
export type BuildStatus = PendingStatus | TerminalStatus;
export const BUILD_STATUSES: readonly BuildStatus[] = [...PENDING_STATUSES, ...TERMINAL_STATUSES];

export function isTerminal(status: BuildStatus): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

export function isBuildStatus(value: string): value is BuildStatus {
  return (BUILD_STATUSES as readonly string[]).includes(value);
}

/** One line an operator reads; exhaustive so that a new status cannot go unexplained. */
export function describeStatus(status: BuildStatus): string {
  switch (status) {
    case 'waiting':
      return 'waiting for its inputs to be built';
    case 'queued':
      return 'ready, waiting for a worker';
    case 'running':
      return 'building on a worker';
    case 'succeeded':
      return 'built, outputs valid in the coordinator store';
    case 'failed':
      return 'the builder failed';
    case 'dependency-failed':
      return 'not built because an input failed';
    case 'aborted':
      return 'stopped by an infrastructure fault (lost worker, SSH or copy error)';
    case 'cancelled':
      return 'cancelled';
    case 'timed-out':
      return 'exceeded its time limit';
    case 'log-limit-exceeded':
      return 'its log exceeded the size limit';
    case 'output-limit-exceeded':
      return 'its output exceeded the size limit';
    case 'cached-failure':
      return 'failed before; not rebuilt';
    case 'unsupported':
      return 'no registered worker can build it';
  }
}

export const RUN_STATUSES = ['running', 'succeeded', 'failed', 'cancelled'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
