import type { Redis } from 'ioredis';
import {
  NixfarmError,
  redisKeys,
  runIdSchema,
  type AttributeListResponse,
  type CheckView,
  type DerivationView,
  type EvaluatingRun,
  type RunTimeline,
  type RunView,
  hashPart,
} from '@nixfarm/shared';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import { attributeStatuses } from './attribute-status.js';
import { runTimeline } from './run-timeline.js';
import type { RunAttributes } from './run-attributes.js';
import type { ImagePublications } from '../images/image-publications.js';

class RunNotFoundError extends NixfarmError {
  constructor(runId: string) {
    super('run-not-found', `no run with id ${JSON.stringify(runId)}: list runs with \`nixfarm runs\``);
  }
}

export interface RunQueriesDeps {
  /** the index of runs, newest first, and the set of active runs */
  redis: Pick<Redis, 'zrevrange' | 'smembers'>;
  graph: Pick<DerivationGraph, 'run' | 'statusCounts' | 'derivationsOf' | 'views' | 'inputsWithin'>;
  /** jobset runs' attributes and evaluation progress */
  attributes: Pick<RunAttributes, 'progress' | 'page' | 'count'>;
  /** image publications of runs that asked for them */
  images?: Pick<ImagePublications, 'list'>;
  /** reproducibility checks of runs that asked for them */
  checks?: { ofRun(runId: string): Promise<CheckView[]> };
}

/** What the API and the dashboard read about runs: one run, its derivations, the latest runs. */
export class RunQueries {
  constructor(private readonly deps: RunQueriesDeps) {}

  async get(runId: string): Promise<RunView> {
    if (!runIdSchema.safeParse(runId).success) throw new RunNotFoundError(runId);
    const { graph } = this.deps;
    const run = await graph.run(runId, ['status', 'createdAt', 'finishedAt', 'request', 'results', 'total', 'error']);
    if (run.status === undefined) throw new RunNotFoundError(runId);
    const counts = await graph.statusCounts(await graph.derivationsOf(runId));
    const evaluation = await this.deps.attributes.progress(runId);
    const publishes = (run.request as { publishImages?: unknown } | undefined)?.publishImages !== undefined;
    const images = publishes && run.status !== 'running' ? await this.deps.images?.list(runId) : undefined;
    const checks = (run.request as { check?: unknown } | undefined)?.check === true ? await this.deps.checks?.ofRun(runId) : undefined;
    return {
      id: runId,
      status: run.status,
      createdAt: run.createdAt ?? Number.NaN,
      finishedAt: run.finishedAt,
      request: run.request ?? null,
      results: run.results ?? [],
      total: run.total ?? 0,
      counts,
      ...(run.error === undefined ? {} : { error: run.error }),
      ...(evaluation === undefined ? {} : { evaluation }),
      ...(images === undefined ? {} : { images }),
      ...(checks === undefined ? {} : { checks }),
    };
  }

  /** A page of a jobset run's attributes with their build results, read from the graph now. */
  async attributes(runId: string, offset: number, limit: number): Promise<AttributeListResponse> {
    const run = await this.get(runId);
    if (run.evaluation === undefined) throw new NixfarmError('invalid-request', `run ${runId} is not a jobset run: its results are in GET /api/runs/${runId}`);
    const { attributes, graph } = this.deps;
    const [page, total] = await Promise.all([attributes.page(runId, offset, limit), attributes.count(runId)]);
    return { attributes: await attributeStatuses(graph, runId, page), offset, total, evaluation: run.evaluation };
  }

  async derivations(runId: string): Promise<DerivationView[]> {
    await this.get(runId);
    return this.deps.graph.views(await this.deps.graph.derivationsOf(runId));
  }

  /** Where the run's time went (run-timeline.ts), from its derivations and the edges between them, read now. */
  async timeline(runId: string, now = Date.now()): Promise<RunTimeline> {
    const run = await this.get(runId);
    const { graph } = this.deps;
    const hashes = await graph.derivationsOf(runId);
    const [views, inputs] = await Promise.all([graph.views(hashes), graph.inputsWithin(hashes)]);
    const pathOf = new Map(views.map((v) => [hashPart(v.drvPath), v.drvPath]));
    const derivations = views.map((view) => ({
      view,
      inputs: (inputs.get(hashPart(view.drvPath)) ?? []).map((h) => pathOf.get(h)).filter((p): p is string => p !== undefined),
    }));
    return runTimeline(run, derivations, now);
  }

  /** The active jobset runs still evaluating, oldest start first: one read per active run. */
  async evaluating(): Promise<EvaluatingRun[]> {
    const ids = await this.deps.redis.smembers(redisKeys.activeRuns);
    const found = await Promise.all(ids.map(async (runId) => ({ runId, evaluation: await this.deps.attributes.progress(runId) })));
    return found
      .filter((r): r is EvaluatingRun => r.evaluation?.state === 'evaluating')
      .sort((a, b) => a.evaluation.startedAt - b.evaluation.startedAt || a.runId.localeCompare(b.runId));
  }

  async list(limit = 50): Promise<RunView[]> {
    const ids = await this.deps.redis.zrevrange(redisKeys.runs, 0, limit - 1);
    return Promise.all(ids.map((id) => this.get(id)));
  }
}
