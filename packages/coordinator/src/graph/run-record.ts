import { RUN_STATUSES, type RunResult, type RunStatus } from '@nixfarm/shared';

/**
 * The run record: one Redis hash per run (redisKeys.run), written only by
 * the graph's Lua operations (open-run, register-run, grow-run, close-run,
 * finish-derivation, cancel-run, end-run). This file is the only description
 * of its fields.
 */
export interface RunRecord {
  status: RunStatus;
  createdAt: number;
  finishedAt: number;
  /** the SubmitRunRequest, as JSON */
  request: unknown;
  results: RunResult[];
  /** derivations registered into the run */
  total: number;
  /** derivations not ended, plus one while the run is open (its sentinel): the run ends when this reaches 0 */
  remaining: number;
  /** derivations that ended other than succeeded */
  failed: number;
  priority: number;
  /** why a run failed (its outputs were not valid in the coordinator store) */
  error: string;
  /** '1' while evaluation may still add derivations (growRun); closeRun clears it and drops the sentinel */
  open: boolean;
}

export type RunField = keyof RunRecord;

const isRunStatus = (value: string): value is RunStatus => (RUN_STATUSES as readonly string[]).includes(value);
const num = (raw: string): number | undefined => (raw === '' || !Number.isFinite(Number(raw)) ? undefined : Number(raw));
function json(raw: string): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return undefined;
  }
}

const DECODERS: { [K in RunField]: (raw: string) => RunRecord[K] | undefined } = {
  status: (raw) => (isRunStatus(raw) ? raw : undefined),
  createdAt: num,
  finishedAt: num,
  request: json,
  results: (raw) => {
    const value = json(raw);
    return Array.isArray(value) ? (value as RunResult[]) : undefined;
  },
  total: num,
  remaining: num,
  failed: num,
  priority: num,
  error: (raw) => raw,
  open: (raw) => raw === '1',
};

/** Every field a run record may hold. */
export const RUN_FIELDS = Object.keys(DECODERS) as RunField[];

export function decodeRun(raw: Readonly<Record<string, string | null | undefined>>): Partial<RunRecord> {
  const out: Partial<Record<RunField, unknown>> = {};
  for (const field of RUN_FIELDS) {
    const value = raw[field];
    if (value === null || value === undefined) continue;
    const decoded = DECODERS[field](value);
    if (decoded !== undefined) out[field] = decoded;
  }
  return out as Partial<RunRecord>;
}
