import type { DerivationView, RunTimeline, RunView, TimelineDerivation, TimelineSegment, TimelineWorker } from '@nixfarm/shared';

/** A derivation of the run with the drv paths of its inputs that are in the run too. */
export interface TimelineInput {
  view: DerivationView;
  inputs: readonly string[];
}

/**
 * Where a run's time went: each derivation's queue wait, copy in, build and
 * copy out on the worker that built it, the chain that ended last, and the
 * workers' share. Computed from what the graph recorded, nothing stored.
 *
 * Clocks: queuedAt is the coordinator's, startedAt and finishedAt the
 * worker's, and the timings are durations the worker measured; so copy in,
 * build and copy out are laid end to end to finish at finishedAt, and the
 * wait runs from queuedAt to startedAt (cut where copying began, should the
 * clocks disagree).
 */
export function runTimeline(run: Pick<RunView, 'id' | 'status' | 'createdAt' | 'finishedAt'>, derivations: readonly TimelineInput[], now: number): RunTimeline {
  const active = run.status === 'running';
  const start = run.createdAt;
  const end = active ? Math.max(now, start) : (run.finishedAt ?? now);
  const wallMs = Math.max(0, end - start);

  const entries = derivations.map(({ view }): TimelineDerivation => {
    const segments = segmentsOf(view, start, now);
    return {
      drvPath: view.drvPath,
      name: view.name,
      status: view.status,
      ...(view.worker === undefined ? {} : { worker: view.worker }),
      attempts: view.attempts,
      built: segments !== undefined,
      critical: false,
      segments: segments ?? [],
    };
  });
  const criticalPath = criticalChain(entries, derivations);
  for (const i of criticalPath) entries[i]!.critical = true;

  const workers = workerSummaries(entries, wallMs);
  const bottleneck = [...workers].sort((a, b) => b.criticalPathMs - a.criticalPathMs || b.busyMs - a.busyMs || a.name.localeCompare(b.name))[0];
  const totals = { queueWaitMs: 0, copyInMs: 0, buildMs: 0, copyOutMs: 0 };
  for (const d of entries)
    for (const s of d.segments) {
      const ms = s.end - s.start;
      if (s.kind === 'wait') totals.queueWaitMs += ms;
      else if (s.kind === 'copy-in') totals.copyInMs += ms;
      else if (s.kind === 'build') totals.buildMs += ms;
      else if (s.kind === 'copy-out') totals.copyOutMs += ms;
    }
  return {
    runId: run.id,
    status: run.status,
    start,
    end,
    wallMs,
    active,
    derivations: entries,
    criticalPath: criticalPath.map((i) => entries[i]!.drvPath),
    workers,
    ...(bottleneck === undefined ? {} : { bottleneck: bottleneck.name }),
    totals,
  };
}

/**
 * The bars of a derivation this run had built, or undefined when it has none:
 * it never started, or it ended before the run began (valid or failed
 * before: a cached failure), or no worker took it.
 */
function segmentsOf(view: DerivationView, runStart: number, now: number): TimelineSegment[] | undefined {
  const { queuedAt, startedAt, finishedAt, timings } = view;
  if (startedAt === undefined || view.worker === undefined || view.status === 'cached-failure') return undefined;
  const wait = (until: number): TimelineSegment[] => (queuedAt !== undefined && queuedAt < until ? [{ kind: 'wait', start: queuedAt, end: until }] : []);
  if (view.status === 'running') return [...wait(startedAt), { kind: 'running', start: startedAt, end: Math.max(startedAt, now) }];
  if (finishedAt === undefined || finishedAt < runStart) return undefined;
  // Ended by the coordinator (a lost worker's last try) without the worker's timings: its whole span counts as building.
  if (timings === undefined) return [...wait(startedAt), { kind: 'build', start: startedAt, end: Math.max(startedAt, finishedAt) }];
  const copyOutStart = finishedAt - timings.copyOutMs;
  const buildStart = copyOutStart - timings.buildMs;
  const copyInStart = buildStart - timings.copyInMs;
  return [
    ...wait(Math.min(startedAt, copyInStart)),
    { kind: 'copy-in', start: copyInStart, end: buildStart },
    { kind: 'build', start: buildStart, end: copyOutStart },
    { kind: 'copy-out', start: copyOutStart, end: finishedAt },
  ];
}

const endOf = (d: TimelineDerivation): number => d.segments[d.segments.length - 1]?.end ?? Number.NEGATIVE_INFINITY;

/** Indices of the critical chain, first input first: from the built derivation that ended last, back through its built input that ended last. */
function criticalChain(entries: readonly TimelineDerivation[], derivations: readonly TimelineInput[]): number[] {
  const index = new Map(entries.map((d, i) => [d.drvPath, i]));
  const latest = (candidates: Iterable<number>): number | undefined => {
    let best: number | undefined;
    for (const i of candidates) {
      const d = entries[i]!;
      if (!d.built) continue;
      const b = best === undefined ? undefined : entries[best]!;
      if (b === undefined || endOf(d) > endOf(b) || (endOf(d) === endOf(b) && d.drvPath < b.drvPath)) best = i;
    }
    return best;
  };
  const chain: number[] = [];
  const seen = new Set<number>();
  for (let at = latest(entries.keys()); at !== undefined && !seen.has(at); ) {
    chain.push(at);
    seen.add(at);
    const inputs = derivations[at]!.inputs.map((p) => index.get(p)).filter((i): i is number => i !== undefined);
    at = latest(inputs);
  }
  return chain.reverse();
}

/** Per worker that built something for the run: counts, busy time (the union of its spans) and time on the critical path. */
function workerSummaries(entries: readonly TimelineDerivation[], wallMs: number): TimelineWorker[] {
  const byWorker = new Map<string, { summary: TimelineWorker; spans: Array<[number, number]> }>();
  for (const d of entries) {
    if (!d.built || d.worker === undefined) continue;
    let w = byWorker.get(d.worker);
    if (w === undefined) {
      const summary = { name: d.worker, builds: 0, busyMs: 0, busyShare: 0, copyInMs: 0, buildMs: 0, copyOutMs: 0, criticalPathMs: 0, criticalPathBuilds: 0 };
      w = { summary, spans: [] };
      byWorker.set(d.worker, w);
    }
    const s = w.summary;
    s.builds++;
    const work = d.segments.filter((seg) => seg.kind !== 'wait');
    if (work.length > 0) w.spans.push([work[0]!.start, work[work.length - 1]!.end]);
    for (const seg of work) {
      const ms = seg.end - seg.start;
      if (seg.kind === 'copy-in') s.copyInMs += ms;
      else if (seg.kind === 'copy-out') s.copyOutMs += ms;
      else if (seg.kind === 'build') s.buildMs += ms;
      if (d.critical) s.criticalPathMs += ms;
    }
    if (d.critical) s.criticalPathBuilds++;
  }
  return [...byWorker.values()]
    .map(({ summary, spans }) => {
      const busyMs = unionLength(spans);
      return { ...summary, busyMs, busyShare: wallMs > 0 ? Math.min(1, busyMs / wallMs) : 0 };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** The total length of a set of intervals, overlaps counted once. */
function unionLength(spans: Array<[number, number]>): number {
  spans.sort((a, b) => a[0] - b[0]);
  let total = 0;
  let current: [number, number] | undefined;
  for (const [s, e] of spans) {
    if (current === undefined || s > current[1]) {
      if (current !== undefined) total += current[1] - current[0];
      current = [s, e];
    } else current[1] = Math.max(current[1], e);
  }
  return total + (current === undefined ? 0 : current[1] - current[0]);
}
