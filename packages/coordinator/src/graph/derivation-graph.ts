import type { Redis } from 'ioredis';
import { redisKeys, type BuildStatus, type DerivationView, type TerminalStatus } from '@nixfarm/shared';
import { encodeNode, type GraphNodeSpec, type HandedBack, type NodeRecord } from './derivation-node.js';
import { NodeReader } from './node-reader.js';
import { PlanOrder } from './plan-order.js';
import { READY_FIELDS, readyFrom, type ReadyDerivation } from './ready-derivation.js';
import { decodeRun, type RunRecord, type RunField } from './run-record.js';
import type {
  BuildAttempt,
  FinishDetails,
  FinishOutcome,
  GraphTransition,
  GrowOutcome,
  RegistrationOutcome,
  RequeueOutcome,
  StartOutcome,
} from './graph-transitions.js';
import { decodeSlot, defineOperations, queueOperation, runOperation, type GraphOperation } from './operations/graph-operation.js';
import { GRAPH_OPERATIONS } from './operations/index.js';
import { cancelRunOperation } from './operations/cancel-run.js';
import { closeRunOperation } from './operations/close-run.js';
import { endRunOperation, type EndRunCall } from './operations/end-run.js';
import { finishDerivationOperation } from './operations/finish-derivation.js';
import { growRunOperation } from './operations/grow-run.js';
import { handBackOperation } from './operations/hand-back.js';
import { markStartedOperation } from './operations/mark-started.js';
import { openRunOperation, type OpenRunCall } from './operations/open-run.js';
import { encodeRegistration, registerRunOperation, type RegisterCall, type RegisterReply, type RegistrationOptions } from './operations/register-run.js';
import { requeueOperation } from './operations/requeue.js';

export type { ReadyDerivation } from './ready-derivation.js';
export type { HandedBack, GraphNodeSpec } from './derivation-node.js';
export type * from './graph-transitions.js';
export type { RegistrationOptions } from './operations/register-run.js';

/** Nodes registered per script call: keeps each call short so Redis stays responsive. */
const REGISTER_CHUNK = 5000;

/**
 * The build DAG, kept in Redis so that no process holds the only copy. A node
 * is one derivation, shared by every run that needs it; edges point from an
 * input to its dependents. The coordinator is the only writer, through the
 * operations in ./operations (one Lua script each); docs/architecture.md
 * draws the state machine.
 */
export class DerivationGraph {
  readonly nodes: NodeReader;

  constructor(private readonly redis: Redis) {
    defineOperations(redis, GRAPH_OPERATIONS);
    this.nodes = new NodeReader(redis);
  }

  /** Records a new run, open: it cannot end before closeRun, however fast its derivations finish. */
  async openRun(run: OpenRunCall): Promise<void> {
    await runOperation(this.redis, openRunOperation, run);
  }

  /**
   * Adds a run's derivations: new ones (or ones that ended before) start
   * waiting; ones another run already builds are joined. Returns those ready now.
   * Inputs are registered before their dependents so a chunk never counts a
   * pending input that a later chunk would reset.
   */
  async registerRun(
    runId: string,
    nodes: readonly GraphNodeSpec[],
    options: RegistrationOptions,
    /**
     * Told of each chunk's outcome as soon as it is registered, in order, while
     * the next chunks register: a large run's first builds are queued without
     * waiting for the whole graph (inputs go first, so the leaves come first).
     * The returned outcome then holds no ready derivations: they were handed over.
     */
    onChunk?: (part: RegistrationOutcome) => Promise<void>,
  ): Promise<RegistrationOutcome> {
    if (onChunk === undefined) return this.registration(await this.registerChunks(registerRunOperation, runId, nodes, options));
    let handled: Promise<unknown> = Promise.resolve();
    const replies = await this.registerChunks(registerRunOperation, runId, nodes, options, (reply) => {
      handled = handled.then(async () => onChunk(await this.registration([reply])));
      return handled;
    });
    await handled;
    return { ...tally(replies), ready: [] };
  }

  /**
   * Registers more derivations into a running, open run (a streaming
   * evaluation's next part): counted in its total and remaining, joined where
   * pending, released when ready, exactly like registerRun; nodes the run
   * holds already are left out. Inputs must be registered before, in this
   * call or an earlier one.
   */
  async growRun(runId: string, nodes: readonly GraphNodeSpec[], options: RegistrationOptions): Promise<GrowOutcome> {
    const replies = await this.registerChunks(growRunOperation, runId, nodes, options);
    // Only the caller closes or ends its run, so a refusal comes with the first chunk or not at all.
    const first = replies[0];
    if (first !== undefined && first.kind !== 'grown') return { type: 'refused', reason: first.kind };
    const grown = replies.filter((r): r is Extract<typeof r, { kind: 'grown' }> => r.kind === 'grown');
    return { type: 'grown', ...(await this.registration(grown)) };
  }

  /** Evaluation is complete: the run takes no more derivations. Returns true when nothing is left (the caller ends the run). */
  async closeRun(runId: string): Promise<boolean> {
    const reply = await runOperation(this.redis, closeRunOperation, { runId });
    return reply.kind === 'closed' && reply.drained;
  }

  /** Records the end of a run; false when it was no longer running (ended or cancelled meanwhile). */
  async endRun(end: EndRunCall): Promise<boolean> {
    return (await runOperation(this.redis, endRunOperation, end)).kind === 'ended';
  }

  /** The run record's fields asked for. */
  async run<F extends RunField>(runId: string, fields: readonly F[]): Promise<Partial<Pick<RunRecord, F>>> {
    const values = await this.redis.hmget(redisKeys.run(runId), ...fields);
    return decodeRun(Object.fromEntries(fields.map((f, i) => [f, values[i]]))) as Partial<Pick<RunRecord, F>>;
  }

  private async registerChunks<Reply>(
    op: GraphOperation<RegisterCall, Reply>,
    runId: string,
    nodes: readonly GraphNodeSpec[],
    options: RegistrationOptions,
    /** each chunk's reply as it arrives; the next chunk waits for what this returns only to keep one handler behind */
    onReply?: (reply: Reply) => Promise<unknown>,
  ): Promise<Reply[]> {
    const ordered = options.ordered === true ? nodes : topologicalOrder(nodes);
    const now = String(Date.now());
    // Chunks go out in order on one connection, so Redis runs them in order; the next chunk is encoded
    // while Redis runs the one before (one in flight at a time keeps the encoded strings few).
    const replies: Array<Promise<Reply>> = [];
    let inFlight: Promise<unknown> = Promise.resolve();
    for (let i = 0; i < ordered.length; i += REGISTER_CHUNK) {
      const chunk = encodeRegistration(ordered.slice(i, i + REGISTER_CHUNK), options);
      await inFlight;
      const reply = runOperation(this.redis, op, {
        runId,
        now,
        rebuildFailed: options.rebuildFailed,
        nodes: chunk,
        ...(options.checkedAt === undefined ? {} : { checkedAt: options.checkedAt }),
      });
      replies.push(reply);
      inFlight = onReply === undefined ? reply : reply.then(onReply);
    }
    await inFlight;
    return Promise.all(replies);
  }

  private async registration(replies: readonly RegisterReply[]): Promise<RegistrationOutcome> {
    return { ...tally(replies), ready: await this.readyDetails(replies.flatMap((r) => r.ready)) };
  }

  /** `at` is the worker's clock: start and end of one build come from the same clock, so per-worker overlap can be checked. */
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
    const pipeline = this.redis.pipeline();
    const now = String(Date.now());
    for (const t of transitions) {
      if (t.type === 'start')
        queueOperation(pipeline, markStartedOperation, { hash: t.hash, worker: t.worker, at: t.at, ...(t.job === undefined ? {} : { job: t.job }) });
      else
        queueOperation(pipeline, finishDerivationOperation, {
          hash: t.hash,
          status: t.status,
          now,
          details: t.details,
          ...(t.reporter === undefined ? {} : { reporter: t.reporter }),
          ...(t.divergence === undefined ? {} : { divergence: t.divergence }),
        });
    }
    const replies = (await pipeline.exec()) ?? [];
    return transitions.map((t, i): StartOutcome | FinishOutcome => {
      if (t.type === 'start') {
        const started = decodeSlot(markStartedOperation, replies[i]);
        return started.kind === 'started' ? { type: 'start', applied: true, runIds: started.runIds } : { type: 'start', applied: false, runIds: [] };
      }
      const finish = decodeSlot(finishDerivationOperation, replies[i]);
      const none = { type: 'finish' as const, released: [], dependencyFailed: [], finishedRuns: [], runIds: [], applied: false };
      if (finish.kind === 'ended') return none;
      if (finish.kind === 'stale') return { ...none, stale: finish.why };
      return {
        type: 'finish',
        released: finish.released,
        dependencyFailed: finish.dependencyFailed,
        finishedRuns: finish.finishedRuns,
        runIds: finish.runIds,
        applied: true,
      };
    });
  }

  async requeue(hash: string, error: string): Promise<ReadyDerivation | undefined> {
    const outcome = await this.requeueAttempt(hash, error);
    return outcome.type === 'requeued' ? outcome.ready : undefined;
  }

  /** Retries the build a worker reported aborted, unless that report is stale (another attempt runs, or a retry already replaced its job). */
  async requeueAttempt(hash: string, error: string, reporter?: BuildAttempt): Promise<RequeueOutcome> {
    const reply = await runOperation(this.redis, requeueOperation, { hash, now: String(Date.now()), error, ...(reporter === undefined ? {} : { reporter }) });
    if (reply.kind === 'stale') return { type: 'ignored', reason: 'stale', why: reply.why };
    if (reply.kind === 'not-pending') return { type: 'ignored', reason: 'not-pending' };
    return { type: 'requeued', ready: { ...reply.ready, hash } };
  }

  /** The workers whose successful builds of each derivation were reported, in order: hash -> workers. */
  async builders(hashes: Iterable<string>): Promise<Map<string, string[]>> {
    const unique = [...new Set(hashes)];
    const nodes = await this.nodes.readMany(unique, ['successes']);
    return new Map(unique.map((h, i) => [h, (nodes[i]?.successes ?? []).map((s) => s.worker)]));
  }

  /**
   * A worker (draining, or whose Nix cannot build) gave back a build it was running: queued again, the try
   * not counted. Returns the runs that need it, or undefined when the node is
   * not running on that worker (a stale or repeated hand-back: nothing changes).
   */
  async handBack(hash: string, handedBack: HandedBack): Promise<string[] | undefined> {
    const reply = await runOperation(this.redis, handBackOperation, { hash, now: String(Date.now()), handedBack });
    return reply.kind === 'handed-back' ? reply.runIds : undefined;
  }

  /** Corrects the critical paths registered from an estimate (a single field outside Lua: it never changes the status). */
  async setCriticalPaths(paths: ReadonlyArray<{ hash: string; criticalPathMs: number }>): Promise<void> {
    if (paths.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const { hash, criticalPathMs } of paths) pipeline.hset(redisKeys.drv(hash), encodeNode({ criticalPath: criticalPathMs }));
    await pipeline.exec();
  }

  /** Records that no live worker can take this queued derivation; views show it as unsupported until a worker starts it. */
  async markAllUnsupported(marks: ReadonlyArray<{ hash: string; reason: string }>): Promise<void> {
    if (marks.length === 0) return;
    const pipeline = this.redis.pipeline();
    // A single field set outside Lua: it never changes the status, and a start clears it.
    for (const { hash, reason } of marks) pipeline.hset(redisKeys.drv(hash), encodeNode({ unsupported: reason }));
    await pipeline.exec();
  }

  /** Ends a running run; returns the derivations it cancelled with their status before, or undefined if the run was not running. */
  async cancelRun(runId: string): Promise<Array<{ hash: string; was: string }> | undefined> {
    const reply = await runOperation(this.redis, cancelRunOperation, { runId, now: String(Date.now()) });
    return reply.kind === 'cancelled' ? reply.cancelled : undefined;
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
    return this.inRun(runId, (status) => status !== undefined && statuses.includes(status));
  }

  /** The hash parts of a run's derivations. */
  async derivationsOf(runId: string): Promise<string[]> {
    return this.redis.smembers(redisKeys.runDrvs(runId));
  }

  private async inRun(runId: string, keep: (status: BuildStatus | undefined, worker: string | undefined) => boolean): Promise<string[]> {
    const hashes = await this.derivationsOf(runId);
    const nodes = await this.nodes.readMany(hashes, ['status', 'worker']);
    return hashes.filter((_, i) => keep(nodes[i]?.status, nodes[i]?.worker));
  }

  async runsOf(hash: string): Promise<string[]> {
    return this.nodes.runsOf(hash);
  }

  /** The runs of each derivation, in one round trip: hash -> run ids. */
  async runsOfAll(hashes: Iterable<string>): Promise<Map<string, string[]>> {
    const unique = [...new Set(hashes)];
    const runs = await this.membersOfEach(unique.map((h) => redisKeys.drvRuns(h)));
    return new Map(unique.map((h, i) => [h, runs[i]!]));
  }

  /**
   * The inputs of each of these derivations that are among them: hash -> input
   * hash parts. Edges are stored from an input to its dependents (a node is
   * shared by runs), so this reads each one's dependents once and turns them round.
   */
  async inputsWithin(hashes: readonly string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>(hashes.map((h) => [h, []]));
    const dependents = await this.membersOfEach(hashes.map((h) => redisKeys.drvDependents(h)));
    hashes.forEach((input, i) => {
      for (const d of dependents[i]!) out.get(d)?.push(input);
    });
    return out;
  }

  /** The members of each set, in one round trip. */
  private async membersOfEach(keys: readonly string[]): Promise<string[][]> {
    if (keys.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const key of keys) pipeline.smembers(key);
    const replies = (await pipeline.exec()) ?? [];
    return keys.map((_, i) => {
      const [error, members] = replies[i] ?? [new Error('no reply from redis'), undefined];
      if (error) throw error;
      return members as string[];
    });
  }

  async attempts(hash: string): Promise<number> {
    return (await this.nodes.read(hash, ['attempts']))?.attempts ?? 0;
  }

  /** How many of these derivations are in each status, as their views show it; reads only the status, not the whole node. */
  async statusCounts(hashes: readonly string[]): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const node of await this.nodes.readMany(hashes, ['status', 'unsupported'])) {
      if (node?.status === undefined) continue;
      const shown = node.status === 'queued' && node.unsupported !== undefined ? 'unsupported' : node.status;
      counts[shown] = (counts[shown] ?? 0) + 1;
    }
    return counts;
  }

  async views(hashes: readonly string[]): Promise<DerivationView[]> {
    const out: DerivationView[] = [];
    for (const node of await this.nodes.readAllMany(hashes))
      if (node !== undefined) {
        const view = viewOf(node);
        if (view !== undefined) out.push(view);
      }
    return out;
  }

  private async readyDetails(hashes: readonly string[]): Promise<ReadyDerivation[]> {
    if (hashes.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const h of hashes) pipeline.hmget(redisKeys.drv(h), ...READY_FIELDS);
    const replies = (await pipeline.exec()) ?? [];
    return hashes.map((hash, i) => readyFrom(hash, replies[i]?.[1] as Array<string | null>));
  }
}

/** A node as the API shows it; undefined for a node without a path or a known status. */
function viewOf(node: NodeRecord): DerivationView | undefined {
  if (node.path === undefined || node.status === undefined) return undefined;
  // Still queued (a capable worker that registers later takes it), but shown as what it is now.
  const unsupported = node.status === 'queued' && node.unsupported !== undefined;
  const successes = node.successes ?? [];
  return {
    drvPath: node.path,
    name: node.name ?? '',
    system: node.system ?? '',
    requiredFeatures: node.features ?? [],
    status: unsupported ? 'unsupported' : node.status,
    worker: node.worker,
    pendingInputs: node.pending ?? 0,
    attempts: node.attempts ?? 0,
    queuedAt: node.queuedAt,
    startedAt: node.startedAt,
    finishedAt: node.finishedAt,
    timings: node.timings,
    error: unsupported ? node.unsupported : node.error,
    logTail: node.logTail,
    // How often a derivation was built successfully, by whom, and whether one build's outputs differed from the coordinator's copy.
    ...(successes.length === 0 ? {} : { builds: successes.length, builtBy: successes.map((s) => s.worker) }),
    ...(node.divergentBuild === undefined ? {} : { divergentBuild: node.divergentBuild }),
  };
}

/** Inputs before dependents, every leaf first (Kahn's algorithm over the planned subgraph). */
export function topologicalOrder<T extends { hash: string; inputs: readonly string[] }>(nodes: readonly T[]): T[] {
  return new PlanOrder(nodes).slice(0, nodes.length);
}

/** What registration replies add up to, but the ready derivations (read from their nodes by the caller). */
function tally(replies: readonly RegisterReply[]): Omit<RegistrationOutcome, 'ready'> {
  const outcome: Omit<RegistrationOutcome, 'ready'> = { cachedFailures: [], dependencyFailed: [], joined: 0 };
  for (const r of replies) {
    outcome.cachedFailures.push(...r.cachedFailures);
    outcome.dependencyFailed.push(...r.dependencyFailed);
    outcome.joined += r.joined;
  }
  return outcome;
}
