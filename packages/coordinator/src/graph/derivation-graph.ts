import type { Redis } from 'ioredis';
import {
  REDIS_PREFIX,
  dependentsOf,
  isBuildStatus,
  redisKeys,
  type BuildJob,
  type BuildStatus,
  type BuildTimings,
  type DerivationView,
  type TerminalStatus,
} from '@nixfarm/shared';
import type { PlannedDerivation } from '../evaluation/build-planner.js';
import { CANCEL_RUN, FINISH_DERIVATION, HAND_BACK, MARK_STARTED, REGISTER_RUN, REQUEUE } from './graph-scripts.js';

export interface ReadyDerivation {
  hash: string;
  queue: string;
  job: BuildJob;
  priority: number;
  /** attempts already started; a retry gets its own BullMQ job id so it never collides with the finished one */
  attempt: number;
  /** back-off before a retry may start */
  delayMs?: number;
  /** the derivation asks to be built where it is needed (preferLocalBuild) */
  preferLocalBuild?: boolean;
  /** expected work from this derivation to the end of its run, ms; absent in FIFO order */
  criticalPathMs?: number;
}

export interface RegistrationOutcome {
  ready: ReadyDerivation[];
  /** hashes of derivations that failed before: reported at once, not rebuilt */
  cachedFailures: string[];
  /** hashes of derivations that cannot be built because an input failed before */
  dependencyFailed: string[];
  /** derivations another run already had pending */
  joined: number;
}

export interface StartOutcome {
  type: 'start';
  /** false when the derivation was not queued or running: a stale report */
  applied: boolean;
  /** the runs that need the derivation (when applied) */
  runIds: string[];
}

export interface FinishOutcome {
  type: 'finish';
  /** the runs that need the derivation (when applied) */
  runIds: string[];
  released: ReadyDerivation[];
  dependencyFailed: string[];
  finishedRuns: string[];
  /** false when the node had already ended (a duplicate or late report), or the report was stale */
  applied: boolean;
  /** why the report was dropped as stale: it came from an attempt that no longer decides the build */
  stale?: string;
}

/** One try of one BullMQ job: the job id and BullMQ's count of its starts (a re-run after a lost lock keeps the id, not the try). */
export interface JobTry {
  jobId: string;
  attempt: number;
}

/** The attempt a report speaks for. */
export interface BuildAttempt extends JobTry {
  worker: string;
}

/** A change a worker's report makes to one derivation. */
export type GraphTransition =
  | { type: 'start'; hash: string; worker: string; at: number; job?: JobTry }
  | {
      type: 'finish';
      hash: string;
      status: TerminalStatus;
      details: FinishDetails;
      /** who reports it: an end other than success applies only from the running attempt; absent: the coordinator's own decision */
      reporter?: BuildAttempt;
      /** the build's outputs differ from the coordinator's copy: recorded on the node, also for a duplicate report */
      divergence?: string;
    };

/** What a retry request did. */
export type RequeueOutcome =
  | { type: 'requeued'; ready: ReadyDerivation }
  | { type: 'ignored'; reason: 'not-pending' }
  | { type: 'ignored'; reason: 'stale'; why: string };

export interface FinishDetails {
  worker?: string;
  /** when the worker finished (its clock); the coordinator's clock otherwise */
  finishedAt?: number;
  timings?: BuildTimings;
  error?: string;
  logTail?: string[];
  outputs?: Record<string, string>;
}

/** The last hand-back of a node (field `handedBack`), for `nixfarm why`. */
export interface HandedBack {
  worker: string;
  reason: string;
  /** the worker's clock */
  at: number;
}

/** Nodes registered per script call: keeps each call short so Redis stays responsive. */
const REGISTER_CHUNK = 5000;

/**
 * The build DAG, kept in Redis so that no process holds the only copy. A node
 * is one derivation, shared by every run that needs it; edges point from an
 * input to its dependents. The coordinator is the only writer.
 */
export class DerivationGraph {
  constructor(private readonly redis: Redis) {
    redis.defineCommand('nixfarmRegisterRun', { numberOfKeys: 0, lua: REGISTER_RUN });
    redis.defineCommand('nixfarmMarkStarted', { numberOfKeys: 0, lua: MARK_STARTED });
    redis.defineCommand('nixfarmFinish', { numberOfKeys: 0, lua: FINISH_DERIVATION });
    redis.defineCommand('nixfarmRequeue', { numberOfKeys: 0, lua: REQUEUE });
    redis.defineCommand('nixfarmCancelRun', { numberOfKeys: 0, lua: CANCEL_RUN });
    redis.defineCommand('nixfarmHandBack', { numberOfKeys: 0, lua: HAND_BACK });
  }

  private get commands(): GraphCommands {
    return this.redis as unknown as GraphCommands;
  }

  /**
   * Adds a run's derivations: new ones (or ones that ended before) start
   * waiting; ones another run already builds are joined. Returns those ready now.
   * Inputs are registered before their dependents so a chunk never counts a
   * pending input that a later chunk would reset.
   */
  async registerRun(
    runId: string,
    nodes: readonly PlannedDerivation[],
    options: {
      priority: number;
      rebuildFailed: boolean;
      criticalPathMs?: ReadonlyMap<string, number>;
      /** when the planner checked which outputs are valid: a node that succeeded since is built, not rebuilt */
      checkedAt?: number;
    },
  ): Promise<RegistrationOutcome> {
    const ordered = topologicalOrder(nodes);
    const outcome: RegistrationOutcome = { ready: [], cachedFailures: [], dependencyFailed: [], joined: 0 };
    const now = String(Date.now());
    const encode = (from: number): string =>
      JSON.stringify(
        ordered.slice(from, from + REGISTER_CHUNK).map((n) => ({
          hash: n.hash,
          inputs: n.inputs,
          fields: {
            path: n.drv.path,
            name: n.drv.name,
            system: n.drv.system,
            features: JSON.stringify(n.drv.requiredSystemFeatures),
            queue: n.queue,
            job: JSON.stringify(n.job),
            priority: String(options.priority),
            preferLocal: n.drv.preferLocalBuild ? '1' : '0',
            ...(options.criticalPathMs?.has(n.hash) ? { criticalPath: String(options.criticalPathMs.get(n.hash)) } : {}),
          },
        })),
      );
    // Chunks go out in order on one connection, so Redis runs them in order; the next chunk is encoded
    // while Redis runs the one before (one in flight at a time keeps the encoded strings few).
    const replies: Array<Promise<[string[], string[], string[], string[]]>> = [];
    let inFlight: Promise<unknown> = Promise.resolve();
    for (let i = 0; i < ordered.length; i += REGISTER_CHUNK) {
      const chunk = encode(i);
      await inFlight;
      const reply = this.commands.nixfarmRegisterRun(REDIS_PREFIX, runId, now, options.rebuildFailed ? '1' : '0', chunk, String(options.checkedAt ?? ''));
      replies.push(reply);
      inFlight = reply;
    }
    const ready: string[] = [];
    for (const [r = [], cached = [], depFailed = [], [joined = '0'] = []] of await Promise.all(replies)) {
      ready.push(...r);
      outcome.cachedFailures.push(...cached);
      outcome.dependencyFailed.push(...depFailed);
      outcome.joined += Number(joined);
    }
    outcome.ready = await this.readyDetails(ready);
    return outcome;
  }

  /** `at` is the worker's clock: start and end of one build come from the same clock, so per-worker overlap can be checked. */
  async markStarted(hash: string, worker: string, at: number, job?: JobTry): Promise<boolean> {
    const [started] = await this.apply([{ type: 'start', hash, worker, at, ...(job === undefined ? {} : { job }) }]);
    return started?.applied === true;
  }

  async finish(hash: string, status: TerminalStatus, details: FinishDetails, reporter?: BuildAttempt): Promise<FinishOutcome> {
    const [outcome] = await this.apply([{ type: 'finish', hash, status, details, ...(reporter === undefined ? {} : { reporter }) }]);
    if (outcome?.type !== 'finish') throw new Error('a finish transition did not produce a finish outcome');
    return outcome;
  }

  /**
   * Applies many transitions in one round trip, each its own atomic script,
   * in the order given (a start before the finish of the same derivation).
   * Each outcome comes with the runs that need the derivation, and a finish
   * with what it released, read in the same step.
   */
  async apply(transitions: readonly GraphTransition[]): Promise<Array<StartOutcome | FinishOutcome>> {
    if (transitions.length === 0) return [];
    const pipeline = this.redis.pipeline() as unknown as GraphCommands & { exec(): Promise<Array<[Error | null, unknown]> | null> };
    const now = String(Date.now());
    for (const t of transitions) {
      if (t.type === 'start') pipeline.nixfarmMarkStarted(REDIS_PREFIX, t.hash, t.worker, String(t.at), t.job?.jobId ?? '', t.job === undefined ? '' : String(t.job.attempt));
      else pipeline.nixfarmFinish(REDIS_PREFIX, t.hash, t.status, now, JSON.stringify(finishFields(t.details)), reporterArg(t.reporter), t.divergence ?? '');
    }
    const replies = (await pipeline.exec()) ?? [];
    return transitions.map((t, i): StartOutcome | FinishOutcome => {
      const [error, reply] = replies[i] ?? [new Error('no reply from redis'), undefined];
      if (error) throw error;
      if (t.type === 'start') return Array.isArray(reply) ? { type: 'start', applied: true, runIds: reply as string[] } : { type: 'start', applied: false, runIds: [] };
      const finish = reply as [ReadyFields[], string[], string[], string[]] | [] | ['stale', string];
      if (finish.length === 0) return { type: 'finish', released: [], dependencyFailed: [], finishedRuns: [], runIds: [], applied: false };
      if (finish[0] === 'stale') return { type: 'finish', released: [], dependencyFailed: [], finishedRuns: [], runIds: [], applied: false, stale: String(finish[1]) };
      const [released, dependencyFailed, finishedRuns, runIds] = finish;
      return { type: 'finish', released: released.map(([hash, ...fields]) => readyFrom(String(hash), fields)), dependencyFailed, finishedRuns, runIds, applied: true };
    });
  }

  async requeue(hash: string, error: string): Promise<ReadyDerivation | undefined> {
    const outcome = await this.requeueAttempt(hash, error);
    return outcome.type === 'requeued' ? outcome.ready : undefined;
  }

  /** Retries the build a worker reported aborted, unless that report is stale (another attempt runs, or a retry already replaced its job). */
  async requeueAttempt(hash: string, error: string, reporter?: BuildAttempt): Promise<RequeueOutcome> {
    const reply = await this.commands.nixfarmRequeue(REDIS_PREFIX, hash, String(Date.now()), error, reporterArg(reporter));
    if (typeof reply === 'string') return { type: 'ignored', reason: 'stale', why: reply };
    if (reply !== 1) return { type: 'ignored', reason: 'not-pending' };
    return { type: 'requeued', ready: (await this.readyDetails([hash]))[0]! };
  }

  /** The workers whose successful builds of each derivation were reported, in order: hash -> workers. */
  async builders(hashes: Iterable<string>): Promise<Map<string, string[]>> {
    const unique = [...new Set(hashes)];
    const out = new Map<string, string[]>();
    if (unique.length === 0) return out;
    const pipeline = this.redis.pipeline();
    for (const h of unique) pipeline.hget(redisKeys.drv(h), 'successes');
    const replies = (await pipeline.exec()) ?? [];
    unique.forEach((h, i) => out.set(h, successesFrom((replies[i]?.[1] as string | null) ?? undefined).map((s) => s.worker)));
    return out;
  }

  /**
   * A worker (draining, or whose Nix cannot build) gave back a build it was running: queued again, the try
   * not counted. Returns the runs that need it, or undefined when the node is
   * not running on that worker (a stale or repeated hand-back: nothing changes).
   */
  async handBack(hash: string, handedBack: HandedBack): Promise<string[] | undefined> {
    const reply = await this.commands.nixfarmHandBack(REDIS_PREFIX, hash, handedBack.worker, String(Date.now()), JSON.stringify(handedBack));
    return Array.isArray(reply) ? reply : undefined;
  }

  /** Records that no live worker can take this queued derivation; views show it as unsupported until a worker starts it. */
  async markUnsupported(hash: string, reason: string): Promise<void> {
    await this.markAllUnsupported([{ hash, reason }]);
  }

  async markAllUnsupported(marks: ReadonlyArray<{ hash: string; reason: string }>): Promise<void> {
    if (marks.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const { hash, reason } of marks) pipeline.hset(redisKeys.drv(hash), 'unsupported', reason);
    await pipeline.exec();
  }

  /** Ends a running run; returns the derivations it cancelled with their status before, or undefined if the run was not running. */
  async cancelRun(runId: string): Promise<Array<{ hash: string; was: string }> | undefined> {
    const reply = await this.commands.nixfarmCancelRun(REDIS_PREFIX, runId, String(Date.now()));
    if (reply.length === 1 && Number(reply[0]) === -1) return undefined;
    const out: Array<{ hash: string; was: string }> = [];
    for (let i = 0; i < reply.length; i += 2) out.push({ hash: String(reply[i]), was: String(reply[i + 1]) });
    return out;
  }

  /** Everything queued: what a restarted coordinator makes sure BullMQ still holds. */
  async queuedInRun(runId: string): Promise<ReadyDerivation[]> {
    return this.readyDetails(await this.inRun(runId, (status) => status === 'queued'));
  }

  /** Derivations of a run shown running on this builder: after a restart of the coordinator, its own local builds died with it. */
  async runningInRunOn(runId: string, worker: string): Promise<string[]> {
    return this.inRun(runId, (status, by) => status === 'running' && by === worker);
  }

  /** Derivations of a run in one of these statuses, read from their status field alone (the dashboard's running builds and failures). */
  async inRunWithStatus(runId: string, statuses: readonly BuildStatus[]): Promise<string[]> {
    return this.inRun(runId, (status) => status !== null && (statuses as readonly string[]).includes(status));
  }

  private async inRun(runId: string, keep: (status: string | null, worker: string | null) => boolean): Promise<string[]> {
    const hashes = await this.redis.smembers(redisKeys.runDrvs(runId));
    const pipeline = this.redis.pipeline();
    for (const h of hashes) pipeline.hmget(redisKeys.drv(h), 'status', 'worker');
    const replies = (await pipeline.exec()) ?? [];
    return hashes.filter((_, i) => {
      const [status, worker] = (replies[i]?.[1] as [string | null, string | null] | undefined) ?? [null, null];
      return keep(status, worker);
    });
  }

  async runsOf(hash: string): Promise<string[]> {
    return this.redis.smembers(redisKeys.drvRuns(hash));
  }

  /** The runs of each derivation, in one round trip: hash -> run ids. */
  async runsOfAll(hashes: Iterable<string>): Promise<Map<string, string[]>> {
    const unique = [...new Set(hashes)];
    const out = new Map<string, string[]>();
    if (unique.length === 0) return out;
    const pipeline = this.redis.pipeline();
    for (const h of unique) pipeline.smembers(redisKeys.drvRuns(h));
    const replies = (await pipeline.exec()) ?? [];
    unique.forEach((h, i) => {
      const [error, runs] = replies[i] ?? [new Error('no reply from redis'), undefined];
      if (error) throw error;
      out.set(h, runs as string[]);
    });
    return out;
  }

  async attempts(hash: string): Promise<number> {
    return Number((await this.redis.hget(redisKeys.drv(hash), 'attempts')) ?? 0);
  }

  async status(hash: string): Promise<BuildStatus | undefined> {
    const s = await this.redis.hget(redisKeys.drv(hash), 'status');
    return s !== null && isBuildStatus(s) ? s : undefined;
  }

  async view(hash: string): Promise<DerivationView | undefined> {
    return (await this.views([hash]))[0];
  }

  /** How many of these derivations are in each status, as their views show it; reads only the status, not the whole node. */
  async statusCounts(hashes: readonly string[]): Promise<Record<string, number>> {
    const pipeline = this.redis.pipeline();
    for (const h of hashes) pipeline.hmget(redisKeys.drv(h), 'path', 'status', 'unsupported');
    const counts: Record<string, number> = {};
    for (const [, value] of (await pipeline.exec()) ?? []) {
      const [path, status, unsupported] = value as [string | null, string | null, string | null];
      if (path === null || status === null || !isBuildStatus(status)) continue;
      const shown = status === 'queued' && unsupported !== null ? 'unsupported' : status;
      counts[shown] = (counts[shown] ?? 0) + 1;
    }
    return counts;
  }

  async views(hashes: readonly string[]): Promise<DerivationView[]> {
    const pipeline = this.redis.pipeline();
    for (const h of hashes) pipeline.hgetall(redisKeys.drv(h));
    const replies = (await pipeline.exec()) ?? [];
    const out: DerivationView[] = [];
    for (const [, value] of replies) {
      const f = value as Record<string, string> | null;
      if (f === null || f.path === undefined || f.status === undefined || !isBuildStatus(f.status)) continue;
      out.push({
        drvPath: f.path,
        name: f.name ?? '',
        system: f.system ?? '',
        requiredFeatures: JSON.parse(f.features ?? '[]') as string[],
        // Still queued (a capable worker that registers later takes it), but shown as what it is now.
        status: f.status === 'queued' && f.unsupported !== undefined ? 'unsupported' : f.status,
        worker: f.worker,
        pendingInputs: Number(f.pending ?? 0),
        attempts: Number(f.attempts ?? 0),
        queuedAt: optionalNumber(f.queuedAt),
        startedAt: optionalNumber(f.startedAt),
        finishedAt: optionalNumber(f.finishedAt),
        timings: f.timings === undefined ? undefined : (JSON.parse(f.timings) as BuildTimings),
        error: f.status === 'queued' && f.unsupported !== undefined ? f.unsupported : f.error,
        logTail: f.logTail === undefined ? undefined : (JSON.parse(f.logTail) as string[]),
        ...successView(f),
      });
    }
    return out;
  }

  private async readyDetails(hashes: readonly string[]): Promise<ReadyDerivation[]> {
    if (hashes.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const h of hashes) pipeline.hmget(redisKeys.drv(h), ...READY_FIELDS);
    const replies = (await pipeline.exec()) ?? [];
    return hashes.map((hash, i) => readyFrom(hash, replies[i]?.[1] as ReadyFields));
  }
}

/** A node's fields for queueing, in this order (the Lua scripts read them in the same order). */
const READY_FIELDS = ['queue', 'job', 'priority', 'attempts', 'preferLocal', 'criticalPath'] as const;
type ReadyFields = Array<string | null>;

function readyFrom(hash: string, fields: ReadyFields): ReadyDerivation {
  const [queue, job, priority, attempts, preferLocal, criticalPath] = fields;
  return {
    ...(criticalPath === null || criticalPath === undefined ? {} : { criticalPathMs: Number(criticalPath) }),
    hash,
    queue: queue ?? '',
    // Written by registerRun from the planner's job: our own data, checked again by the worker that takes it.
    job: JSON.parse(job ?? 'null') as BuildJob,
    priority: Number(priority ?? 0),
    attempt: Number(attempts ?? 0),
    preferLocalBuild: preferLocal === '1',
  };
}

interface GraphCommands {
  nixfarmRegisterRun(prefix: string, runId: string, now: string, rebuildFailed: string, nodes: string, checkedAt: string): Promise<[string[], string[], string[], string[]]>;
  nixfarmMarkStarted(prefix: string, hash: string, worker: string, now: string, jobId: string, attempt: string): Promise<string[] | 0>;
  nixfarmFinish(
    prefix: string,
    hash: string,
    status: string,
    now: string,
    fields: string,
    reporter: string,
    divergence: string,
  ): Promise<[ReadyFields[], string[], string[], string[]] | [] | ['stale', string]>;
  nixfarmRequeue(prefix: string, hash: string, now: string, error: string, reporter: string): Promise<number | string>;
  nixfarmCancelRun(prefix: string, runId: string, now: string): Promise<Array<string | number>>;
  nixfarmHandBack(prefix: string, hash: string, worker: string, now: string, handedBack: string): Promise<string[] | 0>;
}

function finishFields(details: FinishDetails): Record<string, string> {
  const fields: Record<string, string> = {};
  if (details.worker !== undefined) fields.worker = details.worker;
  if (details.finishedAt !== undefined) fields.finishedAt = String(details.finishedAt);
  if (details.timings !== undefined) fields.timings = JSON.stringify(details.timings);
  if (details.error !== undefined) fields.error = details.error;
  if (details.logTail !== undefined) fields.logTail = JSON.stringify(details.logTail);
  if (details.outputs !== undefined) fields.outputs = JSON.stringify(details.outputs);
  return fields;
}

/** The reporter as the Lua scripts compare it (every field a string, as Redis stores them). */
function reporterArg(reporter: BuildAttempt | undefined): string {
  return reporter === undefined ? '' : JSON.stringify({ worker: reporter.worker, job: reporter.jobId, try: String(reporter.attempt) });
}

interface RecordedSuccess {
  worker: string;
  job: string;
  try: string;
}

function successesFrom(field: string | undefined): RecordedSuccess[] {
  if (field === undefined) return [];
  // Lua's cjson writes an empty table as {}; the scripts only write non-empty lists, but stay safe.
  const parsed = JSON.parse(field) as unknown;
  return Array.isArray(parsed) ? (parsed as RecordedSuccess[]) : [];
}

/** How often a derivation was built successfully, by whom, and whether one build's outputs differed from the coordinator's copy. */
function successView(f: Record<string, string>): Pick<DerivationView, 'builds' | 'builtBy' | 'divergentBuild'> {
  const successes = successesFrom(f.successes);
  return {
    ...(successes.length === 0 ? {} : { builds: successes.length, builtBy: successes.map((s) => s.worker) }),
    ...(f.divergentBuild === undefined ? {} : { divergentBuild: f.divergentBuild }),
  };
}

function optionalNumber(value: string | undefined): number | undefined {
  return value === undefined ? undefined : Number(value);
}

/** Inputs before dependents (Kahn's algorithm over the planned subgraph). */
export function topologicalOrder(nodes: readonly PlannedDerivation[]): PlannedDerivation[] {
  const byHash = new Map(nodes.map((n) => [n.hash, n]));
  const indegree = new Map(nodes.map((n) => [n.hash, n.inputs.filter((i) => byHash.has(i)).length]));
  const dependents = dependentsOf(nodes);
  const order: PlannedDerivation[] = [];
  const todo = nodes.filter((n) => indegree.get(n.hash) === 0).map((n) => n.hash);
  while (todo.length > 0) {
    const h = todo.pop()!;
    order.push(byHash.get(h)!);
    for (const d of dependents.get(h) ?? []) {
      const left = indegree.get(d)! - 1;
      indegree.set(d, left);
      if (left === 0) todo.push(d);
    }
  }
  if (order.length !== nodes.length) throw new Error('derivation graph has a cycle');
  return order;
}
