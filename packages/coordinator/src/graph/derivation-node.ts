import { isBuildStatus, type BuildJob, type BuildStatus, type BuildTimings, type Derivation } from '@nixfarm/shared';

/**
 * The derivation node: one Redis hash per derivation (redisKeys.drv), shared
 * by every run that needs it. This file is the only description of its
 * fields; every reader decodes them here, every TypeScript writer encodes
 * them here, and the Lua operations write only fields listed here (a unit
 * test checks it).
 */

/** The attempt that runs now, as MARK_STARTED records it: `<worker> <try> <BullMQ job id>` (the form of logAttemptKey). */
export interface RunningAttempt {
  worker: string;
  try: number;
  jobId: string;
}

/** One successful build reported for a node (field `successes`): every string, as Lua compares them. */
export interface RecordedSuccess {
  worker: string;
  job: string;
  try: string;
}

/** The last hand-back of a node (field `handedBack`), for `nixfarm why`. */
export interface HandedBack {
  worker: string;
  reason: string;
  /** the worker's clock */
  at: number;
}

/** Every field of a node, decoded. In Redis each is optional: a reader gets what was written. */
export interface DerivationNode {
  // Written at registration (registerRun, growRun): what the derivation is and how to queue it.
  /** the .drv path */
  path: string;
  name: string;
  system: string;
  /** requiredSystemFeatures */
  features: string[];
  /** the BullMQ queue it goes to */
  queue: string;
  /** the job a worker gets */
  job: BuildJob;
  /** BullMQ priority of the run that registered it */
  priority: number;
  /** preferLocalBuild */
  preferLocal: boolean;
  /** expected work to the end of its run, ms (absent in FIFO order) */
  criticalPath: number;
  /** when it was (re)registered, coordinator clock */
  createdAt: number;
  // The state machine.
  status: BuildStatus;
  /** inputs not built yet (while waiting) */
  pending: number;
  /** tries started (a hand-back does not count) */
  attempts: number;
  /** the worker that runs (or last ran) it */
  worker: string;
  queuedAt: number;
  /** the worker's clock */
  startedAt: number;
  /** the worker's clock, or the coordinator's for its own decisions */
  finishedAt: number;
  /** when the coordinator applied the end (its clock): compared with a planner's checkedAt */
  appliedAt: number;
  /** why it failed, or the last retry's reason */
  error: string;
  // What the end reported.
  timings: BuildTimings;
  logTail: string[];
  /** output name -> store path, as built */
  outputs: Record<string, string>;
  // Bookkeeping of attempts (stale reports, duplicate builds).
  /** the attempt that runs now; reports from any other are stale */
  runningAttempt: RunningAttempt;
  /** BullMQ job id -> the last try a retry replaced */
  retiredJobs: Record<string, number>;
  /** every successful build reported (a late duplicate too), at most MAX_SUCCESSES */
  successes: RecordedSuccess[];
  /** a build whose outputs differed from the coordinator's copy */
  divergentBuild: string;
  /** the last time a worker gave the running build back */
  handedBack: HandedBack;
  /** why no live worker can take it (set while queued; a start clears it) */
  unsupported: string;
}

export type NodeField = keyof DerivationNode;

/** A node as read: the fields asked for, each present only if written. */
export type NodeRecord<F extends NodeField = NodeField> = Partial<Pick<DerivationNode, F>>;

interface FieldCodec<T> {
  decode(raw: string): T | undefined;
  encode(value: T): string;
}

const text: FieldCodec<string> = { decode: (raw) => raw, encode: (value) => value };
const number: FieldCodec<number> = {
  decode: (raw) => {
    if (raw === '') return undefined;
    const n = Number(raw);
    return Number.isFinite(n) ? n : undefined;
  },
  encode: String,
};
/** Our own JSON: a value that does not parse reads as absent, never as a crash of a reader. */
function json<T>(check: (value: unknown) => boolean = () => true): FieldCodec<T> {
  return {
    decode: (raw) => {
      try {
        const value = JSON.parse(raw) as unknown;
        return check(value) ? (value as T) : undefined;
      } catch {
        return undefined;
      }
    },
    encode: (value) => JSON.stringify(value),
  };
}
const isObject = (v: unknown): boolean => v !== null && typeof v === 'object' && !Array.isArray(v);

const RUNNING_ATTEMPT_RE = /^(\S+) (\d+) (.*)$/;

/** The codec of each field: a Record over every field, so a field cannot be added without one. */
const CODECS: { [K in NodeField]: FieldCodec<DerivationNode[K]> } = {
  path: text,
  name: text,
  system: text,
  features: json<string[]>(Array.isArray),
  queue: text,
  job: json<BuildJob>(isObject),
  priority: number,
  preferLocal: { decode: (raw) => raw === '1', encode: (value) => (value ? '1' : '0') },
  criticalPath: number,
  createdAt: number,
  status: { decode: (raw) => (isBuildStatus(raw) ? raw : undefined), encode: (value) => value },
  pending: number,
  attempts: number,
  worker: text,
  queuedAt: number,
  startedAt: number,
  finishedAt: number,
  appliedAt: number,
  error: text,
  timings: json<BuildTimings>(isObject),
  logTail: json<string[]>(Array.isArray),
  outputs: json<Record<string, string>>(isObject),
  runningAttempt: {
    decode: (raw) => {
      const m = RUNNING_ATTEMPT_RE.exec(raw);
      return m === null ? undefined : { worker: m[1]!, try: Number(m[2]), jobId: m[3]! };
    },
    encode: (a) => `${a.worker} ${a.try} ${a.jobId}`,
  },
  retiredJobs: {
    decode: (raw) => {
      const parsed = json<Record<string, unknown>>(isObject).decode(raw);
      if (parsed === undefined) return undefined;
      return Object.fromEntries(Object.entries(parsed).map(([job, last]) => [job, Number(last)]));
    },
    encode: (value) => JSON.stringify(Object.fromEntries(Object.entries(value).map(([job, last]) => [job, String(last)]))),
  },
  // Lua's cjson writes an empty table as {}; the scripts only write non-empty lists, but an object reads as none.
  successes: {
    decode: (raw) => {
      const value = json<unknown>().decode(raw);
      return Array.isArray(value) ? (value as RecordedSuccess[]) : [];
    },
    encode: (value) => JSON.stringify(value),
  },
  divergentBuild: text,
  handedBack: json<HandedBack>((v) => {
    const h = v as Partial<HandedBack> | null;
    return h !== null && typeof h === 'object' && typeof h.worker === 'string' && typeof h.reason === 'string' && typeof h.at === 'number';
  }),
  unsupported: text,
};

/** Every field name a node may hold, in a fixed order: what HGETALL may return, and all the Lua scripts may write. */
export const NODE_FIELDS = Object.keys(CODECS) as NodeField[];

function isNodeField(name: string): name is NodeField {
  return Object.hasOwn(CODECS, name);
}

/** Decodes the fields read (HGETALL's record, or HMGET's values zipped with their names); absent and malformed fields are left out. */
export function decodeNode<F extends NodeField>(raw: Readonly<Partial<Record<F, string | null>>>): NodeRecord<F> {
  const out: Partial<Record<NodeField, unknown>> = {};
  for (const [field, value] of Object.entries(raw) as Array<[string, string | null | undefined]>) {
    if (value === null || value === undefined || !isNodeField(field)) continue;
    const decoded = (CODECS[field] as FieldCodec<unknown>).decode(value);
    if (decoded !== undefined) out[field] = decoded;
  }
  return out as NodeRecord<F>;
}

/** HMGET's reply (values in the order of `fields`) as a record. */
export function zipFields<F extends NodeField>(fields: readonly F[], values: ReadonlyArray<string | null> | undefined): Partial<Record<F, string | null>> {
  const raw: Partial<Record<F, string | null>> = {};
  fields.forEach((f, i) => {
    raw[f] = values?.[i] ?? null;
  });
  return raw;
}

/** Encodes fields for HSET (or for a script that writes them): every value a string. */
export function encodeNode(node: NodeRecord): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [field, value] of Object.entries(node) as Array<[NodeField, unknown]>) {
    if (value === undefined) continue;
    out[field] = (CODECS[field] as FieldCodec<unknown>).encode(value);
  }
  return out;
}

/** The running attempt in the form log streams tag their entries with (logAttemptKey). */
export function runningAttemptKey(attempt: RunningAttempt): string {
  return CODECS.runningAttempt.encode(attempt);
}

/**
 * A derivation to register in the graph: the planner's output, or a part of
 * an evaluation that streams in. Inputs are hash parts of derivations
 * registered before (in the same call, or earlier).
 */
export interface GraphNodeSpec {
  hash: string;
  drv: Pick<Derivation, 'path' | 'name' | 'system' | 'requiredSystemFeatures' | 'preferLocalBuild'>;
  inputs: string[];
  queue: string;
  job: BuildJob;
}
