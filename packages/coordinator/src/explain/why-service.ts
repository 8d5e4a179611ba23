import { readFile } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import {
  NixfarmError,
  hashPart,
  isBuildStatus,
  parseDerivation,
  queuedJobId,
  redisKeys,
  type BuildStatus,
  type Derivation,
} from '@nixfarm/shared';
import { DerivationLocator, parseWhyQuery, type Candidate, type WhyQuery } from './derivation-locator.js';
import { explainDerivation, type Explanation, type InputFacts, type NodeFacts, type QueueFacts, type WorkerFacts } from './explanation.js';

/** What the service needs of the queues: BullMQ's job and its counts. */
export interface QueueLookup {
  queue(name: string): {
    getJob(id: string): Promise<{ getState(): Promise<string>; timestamp: number; opts: { delay?: number } } | undefined | null>;
    getJobCounts(...types: string[]): Promise<Record<string, number>>;
  };
}

export interface WhyServiceDeps {
  redis: Redis;
  workers: { list(): Promise<WorkerFacts[]> };
  queues?: QueueLookup;
  /** the coordinator's Nix adapter; the .drv is read from the coordinator's store to name a node's inputs */
  readDerivation?: (drvPath: string) => Promise<Derivation>;
  now?: () => number;
}

export class DerivationNotFoundError extends NixfarmError {
  constructor(query: string) {
    super('derivation-not-found', `no derivation known for ${query}: is it part of a run? (\`nixfarm runs\` lists runs)`);
  }
}

export class AmbiguousQueryError extends NixfarmError {
  readonly candidates: Candidate[];
  constructor(query: string, candidates: Candidate[], total: number) {
    const lines = candidates.map((c) => `  ${c.status.padEnd(18)} ${c.drvPath}`);
    if (total > candidates.length) lines.push(`  ... and ${total - candidates.length} more`);
    super('ambiguous-query', `${JSON.stringify(query)} matches ${total} derivations; give a longer prefix or the whole path:\n${lines.join('\n')}`, {
      details: { candidates, total },
    });
    this.candidates = candidates;
  }
}

export interface WhyAnswer extends Explanation {
  query: string;
  resolvedBy: string;
}

/** Answers `nixfarm why`: resolve the argument to a graph node, gather what is known about it, explain. */
export class WhyService {
  private readonly locator: DerivationLocator;

  constructor(private readonly deps: WhyServiceDeps) {
    this.locator = new DerivationLocator(deps.redis);
  }

  async explain(raw: string): Promise<WhyAnswer> {
    const query: WhyQuery = parseWhyQuery(raw);
    const resolution = await this.locator.resolve(query);
    if (resolution.kind === 'not-found') throw new DerivationNotFoundError(query.kind === 'hash-prefix' ? query.prefix : query.path);
    if (resolution.kind === 'ambiguous') throw new AmbiguousQueryError(raw.trim(), resolution.candidates, resolution.total);
    const node = await this.node(resolution.hash);
    if (node === undefined) throw new DerivationNotFoundError(raw.trim());
    const now = (this.deps.now ?? Date.now)();
    const workers = node.status === 'queued' || node.status === 'unsupported' || node.status === 'running' ? await this.deps.workers.list() : [];
    const inputs = node.status === 'waiting' ? await this.inputs(node.drvPath) : undefined;
    const queue = node.status === 'queued' || node.status === 'unsupported' ? await this.queueFacts(node) : undefined;
    const explanation = explainDerivation({ node, workers, now, ...(inputs === undefined ? {} : { inputs }), ...(queue === undefined ? {} : { queue }) });
    return { query: raw.trim(), resolvedBy: resolution.via, ...explanation };
  }

  private async node(hash: string): Promise<NodeFacts | undefined> {
    const [fields, runIds] = await Promise.all([this.deps.redis.hgetall(redisKeys.drv(hash)), this.deps.redis.smembers(redisKeys.drvRuns(hash))]);
    if (fields.path === undefined || fields.status === undefined || !isBuildStatus(fields.status)) return undefined;
    runIds.sort();
    const pipeline = this.deps.redis.pipeline();
    for (const id of runIds) pipeline.sismember(redisKeys.activeRuns, id);
    const active = runIds.length === 0 ? [] : ((await pipeline.exec()) ?? []);
    const outputs = fields.outputs ?? jsonField<{ outputs?: Record<string, string> }>(fields.job)?.outputs;
    return {
      hash,
      drvPath: fields.path,
      name: fields.name ?? '',
      system: fields.system ?? '',
      requiredFeatures: jsonField<string[]>(fields.features) ?? [],
      status: fields.status,
      pendingInputs: Number(fields.pending ?? 0),
      attempts: Number(fields.attempts ?? 0),
      ...optional('queue', fields.queue),
      ...optional('worker', fields.worker),
      ...optional('queuedAt', num(fields.queuedAt)),
      ...optional('startedAt', num(fields.startedAt)),
      ...optional('finishedAt', num(fields.finishedAt)),
      ...optional('error', fields.error),
      ...optional('logTail', jsonField<string[]>(fields.logTail)),
      ...optional('outputs', typeof outputs === 'string' ? jsonField<Record<string, string>>(outputs) : outputs),
      ...optional('handedBack', handedBackField(fields.handedBack)),
      runs: runIds.map((id, i) => ({ id, active: active[i]?.[1] === 1 })),
    };
  }

  /** The node's input derivations with their graph status; undefined when the .drv cannot be read. */
  private async inputs(drvPath: string): Promise<InputFacts[] | undefined> {
    let drv: Derivation;
    try {
      drv = this.deps.readDerivation !== undefined ? await this.deps.readDerivation(drvPath) : parseDerivation(drvPath, await readFile(drvPath, 'utf8'));
    } catch {
      return undefined;
    }
    const paths = Object.keys(drv.inputDrvs).sort();
    if (paths.length === 0) return [];
    const pipeline = this.deps.redis.pipeline();
    for (const p of paths) pipeline.hmget(redisKeys.drv(hashPart(p)), 'status', 'worker');
    const replies = (await pipeline.exec()) ?? [];
    return paths.map((drvPath, i) => {
      const [status, worker] = (replies[i]?.[1] as [string | null, string | null] | undefined) ?? [null, null];
      const facts: InputFacts = { drvPath };
      if (status !== null && isBuildStatus(status)) facts.status = status as BuildStatus;
      if (worker !== null) facts.worker = worker;
      return facts;
    });
  }

  private async queueFacts(node: NodeFacts): Promise<QueueFacts | undefined> {
    if (this.deps.queues === undefined || node.queue === undefined) return undefined;
    const queue = this.deps.queues.queue(node.queue);
    const jobId = queuedJobId(node.hash, node.attempts);
    try {
      const [job, counts] = await Promise.all([queue.getJob(jobId), queue.getJobCounts('waiting', 'prioritized', 'delayed')]);
      const waiting = (counts.waiting ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0);
      if (job === undefined || job === null) return { name: node.queue, jobState: 'missing', waiting };
      const jobState = await job.getState();
      const delay = job.opts.delay ?? 0;
      return { name: node.queue, jobState, waiting, ...(jobState === 'delayed' && delay > 0 ? { delayUntil: job.timestamp + delay } : {}) };
    } catch {
      return { name: node.queue };
    }
  }
}

function jsonField<T>(value: string | undefined): T | undefined {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value) as T;
  } catch {
    return undefined;
  }
}

/** The graph's `handedBack` field (our own JSON), only when it has the expected shape. */
function handedBackField(value: string | undefined): NodeFacts['handedBack'] {
  const h = jsonField<{ worker?: unknown; reason?: unknown; at?: unknown }>(value);
  if (h === undefined || h === null || typeof h.worker !== 'string' || typeof h.reason !== 'string' || typeof h.at !== 'number') return undefined;
  return { worker: h.worker, reason: h.reason, at: h.at };
}

function num(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  return Number.isFinite(n) ? n : undefined;
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}


