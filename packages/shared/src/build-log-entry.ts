/**
 * The entries of a build-log stream (redisKeys.buildLog), written by the
 * worker that builds and read by the coordinator: one field set per entry.
 * `lines` holds a batch of log lines joined by "\n"; `end` the attempt's
 * outcome, written once after its last batch.
 */
export const LOG_FIELD = { worker: 'w', jobId: 'j', attempt: 'a', lines: 'l', end: 'e' } as const;

/** Which attempt wrote an entry, in the form the graph records its running attempt (`runningAttempt`). */
export function logAttemptKey(worker: string, attempt: number | string, jobId: string): string {
  return `${worker} ${attempt} ${jobId}`;
}

/** How long a finished attempt's stream stays in Redis (the coordinator keeps the log as a file). */
export const LOG_STREAM_TTL_AFTER_END_SECONDS = 24 * 3600;
/** How long a stream whose writer vanished stays: long enough to read what it streamed. */
export const LOG_STREAM_TTL_WHILE_OPEN_SECONDS = 7 * 24 * 3600;

/** What a log entry's signature covers (signed-report.ts): its field-value pairs as posted, in order, the `sig` field aside. */
export function logEntryPayload(pairs: readonly string[]): string {
  return JSON.stringify(pairs);
}
