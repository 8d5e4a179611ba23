import type { ChainableCommander, Redis } from 'ioredis';
import { checkReportSignature, redisKeys, streamEntryTime, type Logger, type ReportKey, type ReportRejection, type ReportSignature } from '@nixfarm/shared';
import type { AuthorizedKeys } from '../store-endpoint/authorized-keys.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import { LOCAL_BUILDER_NAME } from '../local/local-builder.js';
import { reportKeys, speakerProblem } from '../store-endpoint/report-speakers.js';

/** How long the highest sequence number of a report session is kept after its last report: far beyond REPORT_TIME_WINDOW_MS, past which a copy is refused by its time anyway. */
const SESSION_TTL_SECONDS = 7 * 24 * 3600;

export interface ReportGateOptions {
  redis: Pick<Redis, 'mget' | 'hmget'>;
  /** the workers' keys: re-read (one stat) for every batch, so a revoked key stops counting at the next batch */
  keys: Pick<AuthorizedKeys, 'keys'>;
  /** the coordinator's own key (its SSH host key), which speaks for its local builder and for nothing else */
  own?: ReportKey;
  logger: Logger;
  metrics?: Pick<FarmMetrics, 'reportRejected'>;
}

/** One entry as posted: its stream id, the stream, the payload's exact text, its `sig` field, and the worker the payload names. */
export interface PostedReport {
  id: string;
  stream: string;
  payload: string;
  signature: string | undefined;
  worker: string;
  /** for the log of a rejection (the event's type) */
  type?: string;
}

export interface Rejection {
  report: PostedReport;
  reason: ReportRejection;
  signature?: ReportSignature;
  detail?: string;
}

export interface Admission {
  /** per report, in order: whether it counts */
  admitted: boolean[];
  rejected: Rejection[];
  /** what the coordinator must remember once the batch is applied: the highest sequence per session, new worker-key bindings */
  commit(multi: ChainableCommander): void;
}

/**
 * Decides which posted reports count: those signed by an authorised key (or
 * the coordinator's own, for its local builder), not seen before (each
 * session's sequence only grows; the highest is kept in Redis, so a restart
 * does not reopen the window), and from the key that speaks for the worker
 * they name (the first verified report binds a worker name to its key, in
 * Redis, written by the coordinator only; a binding to a key no longer
 * authorised gives way to the new key). Reading is side-effect free: the
 * caller commits the new state with the batch's acknowledgement, so a batch
 * applied again after a crash is judged the same way.
 */
export class ReportGate {
  constructor(private readonly options: ReportGateOptions) {}

  async admit(reports: readonly PostedReport[]): Promise<Admission> {
    const { redis, own } = this.options;
    const { authorised, keyFor } = await reportKeys(this.options.keys, own);
    const rejected: Rejection[] = [];
    const verified = reports.map((report) => {
      const check = checkReportSignature(report.stream, report.payload, report.signature, streamEntryTime(report.id), keyFor);
      if (!check.ok) {
        rejected.push({
          report,
          reason: check.reason,
          ...(check.signature === undefined ? {} : { signature: check.signature }),
          ...(check.detail === undefined ? {} : { detail: check.detail }),
        });
        return undefined;
      }
      const { signature } = check;
      const reason = speakerProblem(signature, report.worker, { own, authorised });
      if (reason !== undefined) {
        rejected.push({ report, reason, signature });
        return undefined;
      }
      return signature;
    });

    const sessionOf = (s: ReportSignature) => redisKeys.reportSession(s.key, s.session);
    const sessions = [...new Set(verified.filter((s) => s !== undefined).map(sessionOf))];
    const workers = [...new Set(verified.filter((s) => s !== undefined && s.worker !== LOCAL_BUILDER_NAME).map((s) => s!.worker))];
    const [highs, bound] = await Promise.all([
      sessions.length === 0 ? [] : redis.mget(...sessions),
      workers.length === 0 ? [] : redis.hmget(redisKeys.workerKeys, ...workers),
    ]);
    const high = new Map(sessions.map((s, i) => [s, Number(highs[i] ?? 0)]));
    const binding = new Map(workers.map((w, i) => [w, bound[i] ?? undefined]));
    const changedSessions = new Set<string>();
    const newBindings = new Map<string, string>();

    const admitted = verified.map((signature, i) => {
      if (signature === undefined) return false;
      const report = reports[i]!;
      const session = sessionOf(signature);
      if (signature.seq <= high.get(session)!) {
        rejected.push({ report, reason: 'replayed', signature, detail: `sequence ${signature.seq}, already at ${high.get(session)}` });
        return false;
      }
      if (signature.worker !== LOCAL_BUILDER_NAME) {
        const current = binding.get(signature.worker);
        if (speakerProblem(signature, report.worker, { own, authorised, bound: current }) !== undefined) {
          rejected.push({ report, reason: 'worker-bound-to-another-key', signature, detail: `${signature.worker} is bound to ${current}` });
          return false;
        }
        if (current !== signature.key) {
          binding.set(signature.worker, signature.key);
          newBindings.set(signature.worker, signature.key);
        }
      }
      high.set(session, signature.seq);
      changedSessions.add(session);
      return true;
    });
    rejected.sort((a, b) => reports.indexOf(a.report) - reports.indexOf(b.report));
    return {
      admitted,
      rejected,
      commit: (multi) => {
        for (const session of changedSessions) multi.set(session, String(high.get(session)), 'EX', SESSION_TTL_SECONDS);
        if (newBindings.size > 0) multi.hset(redisKeys.workerKeys, Object.fromEntries(newBindings));
      },
    };
  }

  /** Logs and counts what was dropped: once, after the batch it came with was applied. */
  reportRejections(rejected: readonly Rejection[]): void {
    for (const { report, reason, signature, detail } of rejected) {
      this.options.metrics?.reportRejected(reason);
      this.options.logger.warn(
        {
          reason,
          claimedWorker: report.worker,
          keyFingerprint: signature?.key,
          stream: report.stream,
          entryId: report.id,
          ...(report.type === undefined ? {} : { type: report.type }),
          ...(detail === undefined ? {} : { detail }),
        },
        `worker report dropped: ${reason}`,
      );
    }
  }
}
