import { readFileSync } from 'node:fs';
import { parseDerivation } from '@nixfarm/shared';
import type { NixfarmDerivationRow } from './bench-way.js';
import { median, percentile } from './statistics.js';

export type ProfilePhase = 'queueWait' | 'dispatch' | 'copyIn' | 'realise' | 'copyOut' | 'workerOther' | 'completion' | 'release';

/** What each phase measures, in the order the profile prints them. */
export const PROFILE_PHASES: ReadonlyArray<{ phase: ProfilePhase; label: string; definition: string }> = [
  { phase: 'queueWait', label: 'queue wait', definition: 'startedAt - queuedAt: ready to taken by a worker, including waiting for a free slot' },
  {
    phase: 'dispatch',
    label: '  of which dispatch',
    definition: 'startedAt - max(queuedAt, when a slot of that worker last became free): queue wait without slot contention',
  },
  { phase: 'copyIn', label: 'copy in', definition: 'timings.copyInMs: worker asks what of the input closure it lacks and imports it in one stream' },
  { phase: 'realise', label: 'realise', definition: 'timings.buildMs: reading the .drv from the coordinator and building it on a local serve session' },
  { phase: 'copyOut', label: 'copy out', definition: 'timings.copyOutMs: worker copies the outputs to the coordinator' },
  { phase: 'workerOther', label: 'worker other', definition: 'totalMs - copyInMs - buildMs - copyOutMs' },
  { phase: 'completion', label: 'completion', definition: 'finishedAt - startedAt - totalMs (worker clock: publishing the started/finished events)' },
  {
    phase: 'release',
    label: 'release',
    definition: "a dependent's queuedAt - its last input's finishedAt: coordinator checks outputs, finishes the node, queues dependents",
  },
];

export interface PhaseFigures {
  medianMs: number | undefined;
  p90Ms: number | undefined;
  count: number;
}

export type NixfarmProfile = Record<ProfilePhase, PhaseFigures>;

/**
 * Where the time of each derivation goes under nixfarm, from the
 * coordinator's per-derivation view of one or more runs (all on this host,
 * so worker and coordinator clocks are the same clock).
 */
export function nixfarmProfile(runs: ReadonlyArray<readonly NixfarmDerivationRow[]>, slotsPerWorker: number): NixfarmProfile {
  const samples: Record<ProfilePhase, number[]> = {
    queueWait: [],
    dispatch: [],
    copyIn: [],
    realise: [],
    copyOut: [],
    workerOther: [],
    completion: [],
    release: [],
  };
  for (const rows of runs) {
    const byPath = new Map(rows.map((r) => [r.drvPath, r]));
    for (const r of rows) {
      if (r.queuedAt !== undefined && r.startedAt !== undefined) samples.queueWait.push(r.startedAt - r.queuedAt);
      if (r.timings !== undefined) {
        const t = r.timings;
        samples.copyIn.push(t.copyInMs);
        samples.realise.push(t.buildMs);
        samples.copyOut.push(t.copyOutMs);
        samples.workerOther.push(t.totalMs - t.copyInMs - t.buildMs - t.copyOutMs);
        if (r.startedAt !== undefined && r.finishedAt !== undefined) samples.completion.push(r.finishedAt - r.startedAt - t.totalMs);
      }
      const inputs = inputDerivations(r.drvPath).map((p) => byPath.get(p));
      const inputEnds = inputs.map((i) => i?.finishedAt).filter((t): t is number => t !== undefined);
      if (inputEnds.length > 0 && inputEnds.length === inputs.length && r.queuedAt !== undefined) samples.release.push(r.queuedAt - Math.max(...inputEnds));
    }
    samples.dispatch.push(...dispatchLatencies(rows, slotsPerWorker));
  }
  const profile = {} as NixfarmProfile;
  for (const { phase } of PROFILE_PHASES) {
    const values = samples[phase];
    profile[phase] = { medianMs: median(values), p90Ms: percentile(values, 90), count: values.length };
  }
  return profile;
}

function inputDerivations(drvPath: string): string[] {
  try {
    return Object.keys(parseDerivation(drvPath, readFileSync(drvPath, 'utf8')).inputDrvs);
  } catch {
    return [];
  }
}

/**
 * Per worker, sweeps its builds in time order: a build that starts while
 * fewer than `slots` builds run had a free slot since the last moment the
 * count dropped below `slots` (or since ever); its dispatch latency is the
 * time from the later of that and its queuedAt to its start.
 */
function dispatchLatencies(rows: readonly NixfarmDerivationRow[], slots: number): number[] {
  const out: number[] = [];
  const byWorker = new Map<string, NixfarmDerivationRow[]>();
  for (const r of rows) {
    if (r.worker === undefined || r.startedAt === undefined || r.finishedAt === undefined || r.queuedAt === undefined) continue;
    byWorker.set(r.worker, [...(byWorker.get(r.worker) ?? []), r]);
  }
  for (const builds of byWorker.values()) {
    const events = builds.flatMap((b) => [
      { at: b.finishedAt!, start: false, build: b },
      { at: b.startedAt!, start: true, build: b },
    ]);
    // ends before starts at the same instant: a slot freed and refilled at once
    events.sort((x, y) => x.at - y.at || Number(x.start) - Number(y.start));
    let running = 0;
    let freeSince = Number.NEGATIVE_INFINITY;
    for (const e of events) {
      if (e.start) {
        out.push(e.at - Math.max(e.build.queuedAt!, freeSince));
        running++;
      } else {
        if (running === slots) freeSince = e.at;
        running--;
      }
    }
  }
  return out;
}
