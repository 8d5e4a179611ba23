import type { Redis } from 'ioredis';
import {
  LOG_FIELD,
  REPORT_SIGNATURE_FIELD,
  checkReportSignature,
  logEntryPayload,
  redisKeys,
  streamEntryTime,
  type Logger,
  type ReportKey,
  type ReportRejection,
} from '@nixfarm/shared';
import type { AuthorizedKeys } from '../store-endpoint/authorized-keys.js';
import { LOCAL_BUILDER_NAME } from '../local/local-builder.js';
import { reportKeys, speakerProblem } from '../store-endpoint/report-speakers.js';

export type StreamEntry = [id: string, fields: string[]];

export interface SignedLogEntriesOptions {
  redis: Pick<Redis, 'hmget'>;
  keys: Pick<AuthorizedKeys, 'keys'>;
  /** the coordinator's own key: its local builder's log batches */
  own?: ReportKey;
  logger: Logger;
  /** counts a dropped batch (nixfarm_reports_rejected_total) */
  count?: (reason: ReportRejection) => void;
}

/** Each session's highest sequence seen in one stream, carried across the reads of one follow. */
export type LogSessions = Map<string, number>;

/**
 * Which entries of a build-log stream count: a log batch is a worker's report
 * like any other, so it is shown and stored only when signed by the key that
 * speaks for the worker its tag names (shared's signed-report.ts). A replay
 * within the stream is a session's sequence going back; a copy into another
 * derivation's stream fails the signature (the stream is signed). Log reads do
 * not bind worker names to keys (the event gate does): a worker not bound yet
 * is taken at its authorised key's word.
 */
export class SignedLogEntries {
  constructor(private readonly options: SignedLogEntriesOptions) {}

  /** The entries that verify, in order; `report` logs and counts the others (once per build, when its log is stored). */
  async filter(stream: string, entries: readonly StreamEntry[], options: { report?: boolean; sessions?: LogSessions } = {}): Promise<StreamEntry[]> {
    if (entries.length === 0) return [];
    const { own } = this.options;
    const { authorised, keyFor } = await reportKeys(this.options.keys, own);
    const workers = [...new Set(entries.map(([, flat]) => tagOf(flat)).filter((w) => w !== LOCAL_BUILDER_NAME))];
    const bound = workers.length === 0 ? [] : await this.options.redis.hmget(redisKeys.workerKeys, ...workers);
    const binding = new Map(workers.map((w, i) => [w, bound[i] ?? undefined]));
    const sessions = options.sessions ?? new Map<string, number>();
    const kept: StreamEntry[] = [];
    for (const entry of entries) {
      const [id, flat] = entry;
      const at = fieldIndex(flat, REPORT_SIGNATURE_FIELD);
      const signed = at >= 0 ? [...flat.slice(0, at), ...flat.slice(at + 2)] : flat;
      const worker = tagOf(flat);
      const check = checkReportSignature(stream, logEntryPayload(signed), at >= 0 ? flat[at + 1] : undefined, streamEntryTime(id), keyFor);
      let reason: ReportRejection | undefined = check.ok ? undefined : check.reason;
      if (check.ok) {
        const { signature } = check;
        const session = `${signature.key} ${signature.session}`;
        reason = speakerProblem(signature, worker, { own, authorised, bound: binding.get(worker) });
        if (reason === undefined && signature.seq <= (sessions.get(session) ?? 0)) reason = 'replayed';
        if (reason === undefined) sessions.set(session, signature.seq);
      }
      if (reason === undefined) {
        kept.push([id, signed]);
        continue;
      }
      if (options.report === true) {
        this.options.count?.(reason);
        this.options.logger.warn(
          { reason, claimedWorker: worker, keyFingerprint: check.signature?.key, stream, entryId: id },
          `build log batch dropped: ${reason}`,
        );
      }
    }
    return kept;
  }
}

/** Where a field's name is in an entry's flat name-value list (names at even places: a value may read like a name); -1 if absent. */
function fieldIndex(flat: readonly string[], name: string): number {
  for (let i = 0; i + 1 < flat.length; i += 2) if (flat[i] === name) return i;
  return -1;
}

function tagOf(flat: readonly string[]): string {
  const at = fieldIndex(flat, LOG_FIELD.worker);
  return at < 0 ? '?' : flat[at + 1]!;
}
