import { readFile } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import { NixfarmError, hashPart, parseDerivation, queuedJobId, redisKeys, type Derivation } from '@nixfarm/shared';
import { NodeReader } from '../graph/node-reader.js';
import type { FairShareStanding } from '../dispatch/fair-share.js';
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
  /** the dispatcher's fair shares: how a queued build's run stands (absent: not said) */
  fairShare?: { standing(hash: string): FairShareStanding | undefined };
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
  private readonly nodes: NodeReader;

  constructor(private readonly deps: WhyServiceDeps) {
    this.locator = new DerivationLocator(deps.redis);
    this.nodes = new NodeReader(deps.redis);
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
    const [node, runIds] = await Promise.all([this.nodes.readAll(hash), this.nodes.runsOf(hash)]);
    if (node?.path === undefined || node.status === undefined) return undefined;
    runIds.sort();
    const pipeline = this.deps.redis.pipeline();
    for (const id of runIds) pipeline.sismember(redisKeys.activeRuns, id);
    const active = runIds.length === 0 ? [] : ((await pipeline.exec()) ?? []);
    return {
      hash,
      drvPath: node.path,
      name: node.name ?? '',
      system: node.system ?? '',
      requiredFeatures: node.features ?? [],
      status: node.status,
      pendingInputs: node.pending ?? 0,
      attempts: node.attempts ?? 0,
      ...optional('queue', node.queue),
      ...optional('worker', node.worker),
      ...optional('queuedAt', node.queuedAt),
      ...optional('startedAt', node.startedAt),
      ...optional('finishedAt', node.finishedAt),
      ...optional('error', node.error),
      ...optional('logTail', node.logTail),
      ...optional('outputs', node.outputs ?? node.job?.outputs),
      ...optional('handedBack', node.handedBack),
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
    const nodes = await this.nodes.readMany(paths.map(hashPart), ['status', 'worker']);
    return paths.map((drvPath, i) => {
      const facts: InputFacts = { drvPath };
      const input = nodes[i];
      if (input?.status !== undefined) facts.status = input.status;
      if (input?.worker !== undefined) facts.worker = input.worker;
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
      const fairShare = this.deps.fairShare?.standing(node.hash);
      return {
        name: node.queue,
        jobState,
        waiting,
        ...(jobState === 'delayed' && delay > 0 ? { delayUntil: job.timestamp + delay } : {}),
        ...(fairShare === undefined ? {} : { fairShare }),
      };
    } catch {
      return { name: node.queue };
    }
  }
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}
