import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { MemoryStage } from './scheduler-protocol.js';
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
  /** the coordinator process's memory by stage (empty for a checkout whose process does not report it) */
  memoryStages: MemoryStage[];
  /** CPU used from submit to the end of the run, per process: where the time goes on a machine with few cores */
  cpu: { coordinatorSeconds: number; redisSeconds: number; benchWorkersSeconds: number };
  /** Redis time by command, busiest first */
  redisCommands: Array<{ command: string; calls: number; seconds: number }>;
  redisUsedMemoryBytes: number;
  redisPeakMemoryBytes: number;
  targets: { perSecond: number; rssBytes: number; firstBuildSeconds: number; throughputMet: boolean; rssMet: boolean; firstBuildMet: boolean };
  samples: Sample[];
}

const MIB = 1024 * 1024;

/** The rows every report prints, one value per report. */
function rows(reports: readonly SchedulerBenchReport[]): Array<[string, ...string[]]> {
  const row = (name: string, value: (r: SchedulerBenchReport) => string): [string, ...string[]] => [name, ...reports.map(value)];
  return [
    row('commit', (r) => r.commit),
    row('derivations', (r) => `${r.size} (${r.edges} edges), run ${r.runStatus}`),
    row('instant workers', (r) => `${r.workers} x ${r.slotsPerWorker} slots`),
    row('submit (roots, graph, queueing)', (r) => `${r.submitSeconds.toFixed(2)} s`),
    row('first derivation taken by a worker', (r) => `${r.firstBuildSeconds.toFixed(2)} s after submit`),
    row('wall time (submit to run finished)', (r) => `${r.wallSeconds.toFixed(2)} s`),
    row('released / s (overall)', (r) => r.releasedPerSecond.toFixed(0)),
    row('completed / s (overall)', (r) => r.completedPerSecond.toFixed(0)),
    row('released / s (steady, 10-90 %)', (r) => r.steadyReleasedPerSecond.toFixed(0)),
    row('completed / s (steady, 10-90 %)', (r) => r.steadyCompletedPerSecond.toFixed(0)),
    row(
      'CPU s: coordinator / redis / bench workers',
      (r) => `${r.cpu.coordinatorSeconds.toFixed(1)} / ${r.cpu.redisSeconds.toFixed(1)} / ${r.cpu.benchWorkersSeconds.toFixed(1)}`,
    ),
    row('coordinator CPU ms per derivation', (r) => ((r.cpu.coordinatorSeconds * 1000) / r.size).toFixed(3)),
    row('coordinator peak RSS', (r) => `${(r.coordinatorPeakRssBytes / MIB).toFixed(0)} MiB`),
    row('redis memory (end / peak)', (r) => `${(r.redisUsedMemoryBytes / MIB).toFixed(0)} / ${(r.redisPeakMemoryBytes / MIB).toFixed(0)} MiB`),
  ];
}

function printTable(table: ReadonlyArray<readonly string[]>): void {
  const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => (r[c] ?? '').length)));
  for (const r of table)
    process.stdout.write(
      `  ${r
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join('  ')
        .trimEnd()}\n`,
    );
}

function printMemory(r: SchedulerBenchReport): void {
  if (r.memoryStages.length === 0) return;
  process.stdout.write(`\ncoordinator memory by stage${r.label ? ` (${r.label})` : ''} (peak: largest sample of the phase; else after a full GC)\n`);
  printTable([
    ['stage', 'RSS MiB', 'heap used MiB', 'external MiB', 'heap bytes / derivation'],
    ...r.memoryStages.map((s) => [
      `${s.peak ? 'peak during ' : ''}${s.stage}`,
      (s.rssBytes / MIB).toFixed(0),
      (s.heapUsedBytes / MIB).toFixed(0),
      (s.externalBytes / MIB).toFixed(0),
      (s.heapUsedBytes / r.size).toFixed(0),
    ]),
  ]);
}

function printTargets(r: SchedulerBenchReport): void {
  const mark = (ok: boolean) => (ok ? 'met' : 'NOT met');
  process.stdout.write(`  target >= ${r.targets.perSecond}/s released and completed: ${mark(r.targets.throughputMet)}\n`);
  process.stdout.write(`  target coordinator peak RSS <= ${(r.targets.rssBytes / MIB).toFixed(0)} MiB: ${mark(r.targets.rssMet)}\n`);
  process.stdout.write(`  target first build within ${r.targets.firstBuildSeconds} s of submit: ${mark(r.targets.firstBuildMet)}\n`);
}

export function printReport(r: SchedulerBenchReport): void {
  process.stdout.write(`\nscheduler throughput${r.label ? ` (${r.label})` : ''}, ${r.machine.cpus} CPUs, node ${r.machine.node}\n`);
  printTable(rows([r]));
  printTargets(r);
  printMemory(r);
}

/** Checkouts side by side, measured one after the other in one invocation. */
export function printComparison(reports: readonly SchedulerBenchReport[]): void {
  const last = reports.at(-1)!;
  process.stdout.write(`\nscheduler throughput side by side, ${last.machine.cpus} CPUs, node ${last.machine.node}\n`);
  printTable([['', ...reports.map((r) => r.label)], ...rows(reports)]);
  process.stdout.write(`targets, ${last.label}:\n`);
  printTargets(last);
  for (const r of reports) printMemory(r);
}

/** Writes the report (with the baseline's beside it, if any) as scheduler-<timestamp>.json and scheduler-latest.json; returns the first. */
export async function writeReport(r: SchedulerBenchReport, dir: string, baseline?: SchedulerBenchReport): Promise<string> {
  await mkdir(dir, { recursive: true });
  const text = `${JSON.stringify(baseline === undefined ? r : { ...r, baseline }, null, 2)}\n`;
  const file = path.join(dir, `scheduler-${r.at.replace(/[:.]/g, '-')}.json`);
  for (const target of [file, path.join(dir, 'scheduler-latest.json')]) {
    await writeFile(`${target}.tmp`, text);
    await rename(`${target}.tmp`, target);
  }
  return file;
}
