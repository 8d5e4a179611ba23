import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Rates, Sample } from './scheduler-rates.js';

export interface SchedulerBenchReport extends Rates {
  label: string;
  commit: string;
  at: string;
  machine: { cpus: number; node: string };
  size: number;
  edges: number;
  workers: number;
  slotsPerWorker: number;
  runStatus: string;
  /** generating the synthetic plan (stands in for evaluation and planning) */
  dagSeconds: number;
  /** RunService.submitEvaluated: GC roots, graph registration, first queueing */
  submitSeconds: number;
  /** submit until a worker took the first derivation: how long a large run waits before anything builds */
  firstBuildSeconds: number;
  /** submit until the run finished */
  wallSeconds: number;
  coordinatorPeakRssBytes: number;
  /** CPU used from submit to the end of the run, per process: where the time goes on a machine with few cores */
  cpu: { coordinatorSeconds: number; redisSeconds: number; benchWorkersSeconds: number };
  /** Redis time by command, busiest first */
  redisCommands: Array<{ command: string; calls: number; seconds: number }>;
  redisUsedMemoryBytes: number;
  redisPeakMemoryBytes: number;
  targets: { perSecond: number; rssBytes: number; throughputMet: boolean; rssMet: boolean };
  samples: Sample[];
}

const MIB = 1024 * 1024;

export function printReport(r: SchedulerBenchReport): void {
  const rows: Array<[string, string]> = [
    ['derivations', `${r.size} (${r.edges} edges), run ${r.runStatus}`],
    ['instant workers', `${r.workers} x ${r.slotsPerWorker} slots`],
    ['submit (roots, graph, queueing)', `${r.submitSeconds.toFixed(2)} s`],
    ['first derivation taken by a worker', `${r.firstBuildSeconds.toFixed(2)} s after submit`],
    ['wall time (submit to run finished)', `${r.wallSeconds.toFixed(2)} s`],
    ['released / s (overall)', r.releasedPerSecond.toFixed(0)],
    ['completed / s (overall)', r.completedPerSecond.toFixed(0)],
    ['released / s (steady, 10-90 %)', r.steadyReleasedPerSecond.toFixed(0)],
    ['completed / s (steady, 10-90 %)', r.steadyCompletedPerSecond.toFixed(0)],
    [
      'CPU s: coordinator / redis / bench workers',
      `${r.cpu.coordinatorSeconds.toFixed(1)} / ${r.cpu.redisSeconds.toFixed(1)} / ${r.cpu.benchWorkersSeconds.toFixed(1)}`,
    ],
    ['coordinator peak RSS', `${(r.coordinatorPeakRssBytes / MIB).toFixed(0)} MiB`],
    ['redis memory (end / peak)', `${(r.redisUsedMemoryBytes / MIB).toFixed(0)} / ${(r.redisPeakMemoryBytes / MIB).toFixed(0)} MiB`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  process.stdout.write(`\nscheduler throughput${r.label ? ` (${r.label})` : ''}, commit ${r.commit}, ${r.machine.cpus} CPUs, node ${r.machine.node}\n`);
  for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(width)}  ${v}\n`);
  const mark = (ok: boolean) => (ok ? 'met' : 'NOT met');
  process.stdout.write(`  target >= ${r.targets.perSecond}/s released and completed: ${mark(r.targets.throughputMet)}\n`);
  process.stdout.write(`  target coordinator peak RSS <= ${(r.targets.rssBytes / MIB).toFixed(0)} MiB: ${mark(r.targets.rssMet)}\n`);
}

/** Writes the report as scheduler-<timestamp>.json and scheduler-latest.json; returns the first. */
export async function writeReport(r: SchedulerBenchReport, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const text = `${JSON.stringify(r, null, 2)}\n`;
  const file = path.join(dir, `scheduler-${r.at.replace(/[:.]/g, '-')}.json`);
  for (const target of [file, path.join(dir, 'scheduler-latest.json')]) {
    await writeFile(`${target}.tmp`, text);
    await rename(`${target}.tmp`, target);
  }
  return file;
}
