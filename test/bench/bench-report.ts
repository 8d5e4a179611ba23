import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WayId } from './bench-way.js';
import type { JobsetBenchReport } from './jobset-bench.js';
import type { CheckBenchReport } from './check-bench.js';
import type { ClosureBenchReport } from './closure-bench.js';
import type { SlowLinkBenchReport } from './slow-link-bench.js';
import type { ScaleBenchReport } from './scale-bench.js';
import { textTable } from './text-table.js';
import type { TargetResult } from './bench-targets.js';
import { PROFILE_PHASES, type NixfarmProfile } from './nixfarm-profile.js';
import type { WorkloadId } from './workloads.js';

export const OVERHEAD_DEFINITION = [
  'overhead/drv = median over derivations of (span - median local span of the same workload), median over repetitions, where span is',
  '  (a):      start of its build activity (builder forked in a free slot) to its goal being done (outputs valid in the host store);',
  '  (b):      from Nix\'s last "trying to build" of the derivation (the build hook then picks a machine and opens SSH)',
  '            to its goal being done (outputs copied back, valid in the host store);',
  '            both read from nix-build --log-format internal-json -vvv, each line timestamped on arrival;',
  '  (c):      startedAt to finishedAt of GET /api/runs/:id/derivations (worker took the job -> copy in, realise, copy out',
  '            done, outputs valid in the host store). Dispatch before startedAt and release after finishedAt are in the profile.',
  'makespan = start of the build command (nix-build / nixfarm build, evaluation included) to its exit; every output of every',
  '  derivation is then checked valid in the host store (not timed).',
].join('\n');

export interface WayResult {
  way: WayId;
  title: string;
  salts: string[];
  makespansMs: number[];
  /** per repetition, cores' worth of CPU that processes outside the bench used meanwhile */
  foreignCores: number[];
  medianMakespanMs: number;
  /** median of the per-repetition median spans */
  medianSpanMs: number;
  overheadMs?: number;
  ratioToA?: number;
  ratioToB?: number;
}

export interface WorkloadResult {
  workload: WorkloadId;
  description: string;
  derivations: number;
  ways: Partial<Record<WayId, WayResult>>;
  targets: TargetResult[];
}

export interface BenchReport {
  startedAt: string;
  /** false while ways are still to run (written after each way) */
  complete: boolean;
  finishedAt: string;
  quick: boolean;
  machine: { nixVersion: string; cores: number; cpuModel: string; nodeVersion: string; kernel: string; system: string };
  settings: {
    maxJobsPerWorker: number;
    localJobs: number;
    workers: string[];
    reps: number;
    ways: WayId[];
    workloads: WorkloadId[];
    cpuMebibytes?: number;
    setup: string;
  };
  overheadDefinition: string;
  results: WorkloadResult[];
  /** nixfarm per workload, pooled over repetitions */
  profiles: Partial<Record<WorkloadId, NixfarmProfile>>;
  /** the jobset part (--only jobset-2000) */
  jobset?: JobsetBenchReport;
  /** the reproducibility-check part (--only check-overhead) */
  checks?: CheckBenchReport;
  /** the big-closure part (--only closure-1g) */
  closure?: ClosureBenchReport;
  /** the slow-link part (--only closure-slow-link) */
  slowLink?: SlowLinkBenchReport;
  /** the scale-out part (--only scale-out) */
  scale?: ScaleBenchReport;
}

const seconds = (ms: number | undefined): string => (ms === undefined ? '-' : `${(ms / 1000).toFixed(2)} s`);
const millis = (ms: number | undefined): string => (ms === undefined ? '-' : `${Math.round(ms)} ms`);
const ratio = (r: number | undefined): string => (r === undefined ? '-' : `${r.toFixed(2)}x`);

export function formatReport(report: BenchReport): string {
  const out: string[] = [];
  const m = report.machine;
  const s = report.settings;
  out.push(`nixfarm bench ${report.quick ? '(--quick: small sizes, indicative only) ' : ''}${report.startedAt}`);
  out.push(`machine: ${m.cores} cores (${m.cpuModel}), ${m.nixVersion}, node ${m.nodeVersion}, ${m.system}`);
  out.push(`setup: ${s.setup}`);
  out.push(`J = ${s.maxJobsPerWorker} jobs per worker machine (${s.workers.join(', ')}), local -j${s.localJobs}, ${s.reps} repetition(s), medians`);
  out.push('');
  const rows: string[][] = [];
  for (const r of report.results) {
    for (const way of ['a', 'b', 'c'] as const) {
      const w = r.ways[way];
      if (w === undefined) continue;
      const spread = w.makespansMs.length > 1 ? `${seconds(Math.min(...w.makespansMs))} .. ${seconds(Math.max(...w.makespansMs))}` : '';
      rows.push([
        `${r.workload} (${r.derivations})`,
        `(${way}) ${w.title}`,
        seconds(w.medianMakespanMs),
        spread,
        millis(w.overheadMs),
        ratio(w.ratioToA),
        ratio(w.ratioToB),
      ]);
    }
  }
  out.push(textTable(['workload (drvs)', 'way', 'makespan', 'min .. max', 'overhead/drv', 'vs (a)', 'vs (b)'], rows, new Set([2, 3, 4, 5, 6])));
  const foreign = report.results.flatMap((r) => Object.values(r.ways).flatMap((w) => w?.foreignCores ?? []));
  const busiest = foreign.length > 0 ? Math.max(...foreign) : 0;
  if (busiest > 0.25) {
    out.push(`WARNING: processes outside the bench used up to ${busiest.toFixed(2)} of ${m.cores} cores during a run (per run: foreignCores in the JSON);`);
    out.push("  they competed with the builds, so the affected figures overstate that way's time and blur the ratios.");
  }
  out.push('');
  out.push(report.overheadDefinition);
  out.push('');
  out.push('targets (issue 5, on medians):');
  for (const r of report.results) {
    for (const t of r.targets) {
      const verdict = t.met === undefined ? 'not measured (a way it needs was not run)' : `${ratio(t.ratio)}: ${t.met ? 'MET' : 'NOT MET'}`;
      out.push(`  ${t.workload}: ${t.description}: ${verdict}`);
    }
  }
  for (const [workload, profile] of Object.entries(report.profiles)) {
    if (profile === undefined) continue;
    out.push('');
    out.push(`nixfarm profile, ${workload}: where the time of one derivation goes (all derivations of all repetitions)`);
    const prow = PROFILE_PHASES.map(({ phase, label, definition }) => [label, millis(profile[phase].medianMs), millis(profile[phase].p90Ms), definition]);
    out.push(textTable(['phase', 'median', 'p90', 'definition'], prow, new Set([1, 2])));
  }
  return `${out.join('\n')}\n`;
}

/** Writes bench/results/<timestamp>.json and latest.json (each through a .tmp file, so a reader never sees half of one). */
export function writeReport(resultsDir: string, report: BenchReport): string {
  mkdirSync(resultsDir, { recursive: true });
  const text = `${JSON.stringify(report, null, 2)}\n`;
  const stamp = report.startedAt.replace(/[:.]/g, '-');
  const file = join(resultsDir, `${stamp}.json`);
  for (const target of [file, join(resultsDir, 'latest.json')]) {
    writeFileSync(`${target}.tmp`, text);
    renameSync(`${target}.tmp`, target);
  }
  return file;
}
