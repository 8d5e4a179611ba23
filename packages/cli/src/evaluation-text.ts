import type { AttributeBuildCounts, EvaluationProgress } from '@nixfarm/shared';

/**
 * A jobset run's evaluation for people, shared by `nixfarm runs RUN` and
 * `nixfarm status`: its state, attributes done and failed, what is known to
 * be left (only a lower bound while sets are still being listed), its pace,
 * and how the builds of the evaluated attributes went.
 */
export function evaluationSummary(e: EvaluationProgress): string {
  const state = e.state === 'failed' ? `failed (${e.error ?? 'unknown error'})` : e.state;
  return `${state}: ${attributeCounts(e)} · ${seconds(e.elapsedMs / 1000)} · ${e.attributesPerSecond.toFixed(2)} attributes/s`;
}

/** Attributes done, failed, and left as far as it is known. */
export function attributeCounts(e: EvaluationProgress): string {
  const done = `${e.done} done, ${e.failed} failed to evaluate`;
  if (e.discovering) return `${done}, ${e.left} left of ${e.discovered} discovered so far (still discovering)`;
  if (e.state === 'evaluating') return `${done}, ${e.left} of ${e.discovered} left`;
  return e.left > 0 ? `${done}, ${e.left} of ${e.discovered} never evaluated` : done;
}

const OUTCOMES: ReadonlyArray<keyof AttributeBuildCounts> = ['succeeded', 'cached', 'failed', 'dependency-failed', 'unsupported', 'cancelled', 'pending'];

/** The evaluated attributes' builds, outcomes with none left out: "3 succeeded, 1 cached, 2 pending". */
export function buildCounts(builds: AttributeBuildCounts): string {
  const parts = OUTCOMES.filter((o) => builds[o] > 0).map((o) => `${builds[o]} ${o === 'pending' ? 'building or waiting' : o}`);
  return parts.length === 0 ? 'none yet' : parts.join(', ');
}

function seconds(s: number): string {
  if (s < 60) return `${s.toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
