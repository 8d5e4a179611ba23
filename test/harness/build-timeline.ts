import type { DerivationView } from '@nixfarm/shared';

/** The most builds a worker ran at once, from the start and end times it reported (its own clock). */
export function peakConcurrency(rows: readonly Pick<DerivationView, 'worker' | 'startedAt' | 'finishedAt'>[], worker: string): number {
  const edges = rows
    .filter((r) => r.worker === worker)
    .flatMap((r) => [
      { t: r.startedAt!, d: 1 },
      { t: r.finishedAt!, d: -1 },
    ])
    .sort((a, b) => a.t - b.t || a.d - b.d);
  let now = 0;
  let peak = 0;
  for (const e of edges) peak = Math.max(peak, (now += e.d));
  return peak;
}

/** The run id `nixfarm build` prints on stderr ("nixfarm: run <id>: ..."). */
export function runIdOf(stderr: string): string {
  const id = /run (\w+)/.exec(stderr)?.[1];
  if (id === undefined) throw new Error(`the CLI did not name the run:\n${stderr}`);
  return id;
}
