import type { AttributeBuildCounts, EvaluationProgress } from '@nixfarm/shared';

/** The outcomes counted in a run's evaluation hash, as `builds:<outcome>` fields; `pending` is counted when read. */
const SETTLED_OUTCOMES = ['succeeded', 'cached', 'failed', 'dependency-failed', 'unsupported', 'cancelled'] as const;

/**
 * A jobset run's evaluation progress from its evaluation hash as stored
 * (RunAttributes): the counters as they are, and what follows from them at
 * `now` (what is left, elapsed time, pace). Undefined for a run that is not
 * a jobset (no hash).
 */
export function evaluationProgressOf(raw: Readonly<Record<string, string>>, pending: number, now: number): EvaluationProgress | undefined {
  if (raw.state === undefined) return undefined;
  const state = raw.state as EvaluationProgress['state'];
  const done = count(raw.done);
  // Once done, every attribute found has its result; before, a result can be counted before the listing that found it.
  const discovered = state === 'done' ? done : Math.max(count(raw.discovered), done);
  const startedAt = Number(raw.startedAt ?? 0);
  const endedAt = raw.endedAt === undefined ? undefined : Number(raw.endedAt);
  const elapsedMs = Math.max(0, (endedAt ?? now) - startedAt);
  const builds = Object.fromEntries(SETTLED_OUTCOMES.map((outcome) => [outcome, count(raw[`builds:${outcome}`])])) as Omit<AttributeBuildCounts, 'pending'>;
  return {
    state,
    done,
    failed: count(raw.failed),
    discovered,
    // Until the first set is listed, discovery has not ended either.
    discovering: state === 'evaluating' && raw.discovering !== '0',
    left: discovered - done,
    startedAt,
    ...(endedAt === undefined ? {} : { endedAt }),
    ...(raw.error === undefined ? {} : { error: raw.error }),
    elapsedMs,
    attributesPerSecond: elapsedMs === 0 ? 0 : Math.round((done / elapsedMs) * 1000 * 100) / 100,
    builds: { ...builds, pending },
  };
}

function count(value: string | undefined): number {
  const n = Number(value ?? 0);
  return Number.isInteger(n) && n > 0 ? n : 0;
}
