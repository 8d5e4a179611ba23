import type { Redis } from 'ioredis';
import {
  hashPart,
  isBuildStatus,
  redisKeys,
  type BuildStatus,
  type ChecksOverview,
  type DashboardSnapshot,
  type DashboardWorker,
  type DerivationView,
  type FarmStatus,
  type RecentFailure,
  type RunProgress,
  type RunView,
  type RunningBuild,
  type UploadSummary,
  type WorkerListing,
  submitRunRequestSchema,
} from '@nixfarm/shared';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { RunService } from '../runs/run-service.js';

export interface DashboardCollectorOptions {
  redis: Redis;
  runs: Pick<RunService, 'list'>;
  graph: Pick<DerivationGraph, 'inRunWithStatus' | 'views'>;
  /** the same snapshot GET /api/status and /metrics use, so the three agree; its registry gives the speed factors */
  farmStatus: { collectWithRegistry(): Promise<{ status: FarmStatus; registry: WorkerListing[] }> };
  /** the upload queue's panel (absent: no uploads) */
  uploads?: { summary(): Promise<UploadSummary> };
  /** the reproducibility checks' panel (absent: none) */
  checks?: { overview(limit: number): Promise<ChecksOverview> };
  /** recent runs shown (default 10) */
  recentRuns?: number;
  /** recent failures shown (default 20) */
  recentFailures?: number;
}

/** Whether the dashboard lists a derivation that ended in this status among the failures; exhaustive so a new status is decided here. */
export function isShownAsFailure(status: BuildStatus): boolean {
  switch (status) {
    case 'failed':
    case 'timed-out':
    case 'log-limit-exceeded':
    case 'output-limit-exceeded':
    case 'aborted':
    case 'cached-failure':
      return true;
    // An input's failure is listed, not each derivation that waited for it; unsupported shows in the queues and the scaling signal.
    case 'dependency-failed':
    case 'unsupported':
    case 'cancelled':
    case 'succeeded':
    case 'waiting':
    case 'queued':
    case 'running':
      return false;
  }
}

const FAILURE_STATUSES: readonly BuildStatus[] = (
  ['failed', 'timed-out', 'log-limit-exceeded', 'output-limit-exceeded', 'aborted', 'cached-failure'] as const
).filter(isShownAsFailure);

/**
 * Everything the web dashboard draws, read in one pass: the farm status,
 * the builds running now (from the active runs), recent runs with their
 * progress, and the failures of those runs. A finished run cannot change, so
 * its failures are read once and kept.
 */
export class DashboardCollector {
  private readonly finishedFailures = new Map<string, RecentFailure[]>();

  constructor(private readonly options: DashboardCollectorOptions) {}

  async collect(): Promise<DashboardSnapshot> {
    const { redis, runs, farmStatus } = this.options;
    const [{ status, registry }, recent, activeIds] = await Promise.all([
      farmStatus.collectWithRegistry(),
      runs.list(this.options.recentRuns ?? 10),
      redis.smembers(redisKeys.activeRuns),
    ]);
    const [running, failures, uploads, checks] = await Promise.all([
      this.running(activeIds),
      this.failures(recent),
      this.options.uploads?.summary(),
      this.options.checks?.overview(10),
    ]);
    const speedFactors = new Map(registry.map((w) => [w.name, w.speedFactor]));
    const workers: DashboardWorker[] = status.workers.map((w) => ({
      ...w,
      speedFactor: speedFactors.get(w.name) ?? 1,
      building: running.filter((r) => r.worker === w.name).map((r) => ({ drvPath: r.drvPath, name: r.name, startedAt: r.startedAt })),
    }));
    return {
      at: status.at,
      queues: status.queues,
      scaling: status.scaling,
      workers,
      running,
      failures,
      runs: recent.map(progressOf),
      ...(uploads === undefined ? {} : { uploads }),
      ...(checks === undefined ? {} : { checks: { ...checks, recent: [] } }),
    };
  }

  /** The derivations running now in any active run, oldest start first; one entry per derivation however many runs share it. */
  private async running(activeIds: readonly string[]): Promise<RunningBuild[]> {
    const runsOf = new Map<string, string[]>();
    const perRun = await Promise.all(activeIds.map(async (id) => ({ id, hashes: await this.options.graph.inRunWithStatus(id, ['running']) })));
    for (const { id, hashes } of perRun) for (const h of hashes) runsOf.set(h, [...(runsOf.get(h) ?? []), id]);
    const views = await this.options.graph.views([...runsOf.keys()]);
    return views
      .filter((v): v is DerivationView & { worker: string } => v.status === 'running' && v.worker !== undefined)
      .map((v) => ({
        drvPath: v.drvPath,
        name: v.name,
        system: v.system,
        worker: v.worker,
        startedAt: v.startedAt ?? Date.now(),
        attempts: v.attempts,
        runIds: (runsOf.get(hashPart(v.drvPath)) ?? []).sort(),
      }))
      .sort((a, b) => a.startedAt - b.startedAt);
  }

  /** Failed derivations of the recent runs, newest first. */
  private async failures(recent: readonly RunView[]): Promise<RecentFailure[]> {
    const all: RecentFailure[] = [];
    const seen = new Set<string>();
    for (const run of recent) {
      const cached = this.finishedFailures.get(run.id);
      const found = cached ?? (FAILURE_STATUSES.some((s) => (run.counts[s] ?? 0) > 0) ? await this.failuresOf(run.id) : []);
      if (cached === undefined && run.finishedAt !== undefined) this.finishedFailures.set(run.id, found);
      for (const f of found) {
        if (seen.has(f.drvPath)) continue;
        seen.add(f.drvPath);
        all.push(f);
      }
    }
    const keep = new Set(recent.map((r) => r.id));
    for (const id of this.finishedFailures.keys()) if (!keep.has(id)) this.finishedFailures.delete(id);
    return all.sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0)).slice(0, this.options.recentFailures ?? 20);
  }

  private async failuresOf(runId: string): Promise<RecentFailure[]> {
    const views = await this.options.graph.views(await this.options.graph.inRunWithStatus(runId, FAILURE_STATUSES));
    return views
      .filter((v): v is DerivationView & { status: BuildStatus } => isBuildStatus(v.status) && isShownAsFailure(v.status))
      .map((v) => ({
        drvPath: v.drvPath,
        name: v.name,
        system: v.system,
        status: v.status,
        ...(v.worker === undefined ? {} : { worker: v.worker }),
        ...(v.finishedAt === undefined ? {} : { finishedAt: v.finishedAt }),
        ...(v.error === undefined ? {} : { error: v.error }),
        runId,
      }));
  }
}

function progressOf(run: RunView): RunProgress {
  return {
    id: run.id,
    status: run.status,
    createdAt: run.createdAt,
    ...(run.finishedAt === undefined ? {} : { finishedAt: run.finishedAt }),
    attrs: run.evaluation === undefined ? [...new Set(run.results.map((r) => r.attr))] : [jobsetLabel(run.request)],
    total: run.total,
    counts: run.counts,
    ...(run.error === undefined ? {} : { error: run.error }),
    ...(run.evaluation === undefined ? {} : { evaluation: run.evaluation }),
  };
}

/** A jobset run has no attributes of its own to show on its card: what it evaluates stands in for them. */
function jobsetLabel(request: unknown): string {
  const parsed = submitRunRequestSchema.safeParse(request);
  if (!parsed.success) return 'jobset';
  const { flake, file } = parsed.data;
  if (flake !== undefined) return `jobset ${flake}`;
  return file === undefined ? 'jobset (expression)' : `jobset ${file}`;
}
