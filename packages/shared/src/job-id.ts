/**
 * A build's BullMQ job id, which workers, the coordinator and its log tags
 * all carry: the derivation's hash for a first attempt, `<hash>.<attempt>`
 * for a retry (its own id, so it never collides with the finished one), and
 * `local-<hash>` for a build the coordinator runs on its own store (never
 * queued). A reproducibility check's job is `check-<hash>` (`check-<hash>.<n>`
 * for its n-th try). Built and read only here.
 */

/** The queued job of a derivation's `attempt`-th try (0 for the first). */
export function queuedJobId(hash: string, attempt: number): string {
  return attempt === 0 ? hash : `${hash}.${attempt}`;
}

/** The id a build on the coordinator's own store reports under. */
export function localJobId(hash: string): string {
  return `${LOCAL_JOB_PREFIX}${hash}`;
}

const LOCAL_JOB_PREFIX = 'local-';

/** The derivation hash a queued job id names. */
export function hashOfQueuedJobId(jobId: string): string {
  const dot = jobId.indexOf('.');
  return dot === -1 ? jobId : jobId.slice(0, dot);
}

const CHECK_JOB_PREFIX = 'check-';

/** The queued job of a reproducibility check of a derivation, its `attempt`-th try (0 for the first). */
export function checkJobId(hash: string, attempt: number): string {
  return `${CHECK_JOB_PREFIX}${queuedJobId(hash, attempt)}`;
}

/** Whether a job id names a reproducibility check rather than a build. */
export function isCheckJobId(jobId: string): boolean {
  return jobId.startsWith(CHECK_JOB_PREFIX);
}

/** The derivation hash a check's job id names. */
export function hashOfCheckJobId(jobId: string): string {
  return hashOfQueuedJobId(jobId.slice(CHECK_JOB_PREFIX.length));
}
