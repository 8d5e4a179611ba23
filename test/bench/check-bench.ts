// The reproducibility-check part of `npm run bench` (`--only check-overhead`):
// the same workloads built (a) by local nix-build, (c) by nixfarm, and (c')
// by nixfarm whose coordinator samples every successful build for a check
// on another worker (--check-fraction 1). The figure the issue asks about is
// the run's own time, (c') against (c); the checks themselves end after it.
import { hashPart, type CheckView } from '@nixfarm/shared';
import { freshSalt } from '../harness/nix-fixtures.js';
import { sleep } from '../harness/poll.js';
import type { WayRun } from './bench-way.js';
import { median } from './statistics.js';
import { LocalNixWay } from './way-local-nix.js';
import { NixfarmWay } from './way-nixfarm.js';
import type { Workload } from './workloads.js';
import { benchSection } from './text-table.js';

export interface CheckBenchOptions {
  reps: number;
  /** max-jobs per worker machine; local builds get twice that */
  maxJobs: number;
  machineNames: readonly string[];
  timeoutMs: number;
  workloads: readonly Workload[];
  say: (line: string) => void;
}

export interface CheckBenchRow {
  workload: string;
  derivations: number;
  localMs: number;
  nixfarmMs: number;
  checkedMs: number;
  /** (c') / (c) - 1 */
  overhead: number;
  /** checks that ended reproducible, of the derivations built, over all repetitions */
  checked: number;
  built: number;
  /** checks that ran on the worker that built the derivation (must be 0) */
  sameWorker: number;
  /** from the checked run's end to its last check's end, median, ms */
  drainMs: number;
}

export interface CheckBenchReport {
  reps: number;
  maxJobs: number;
  rows: CheckBenchRow[];
  goals: Array<{ goal: string; measured: string; met: boolean }>;
}

/** How much longer a run may take while all its builds are checked in the background (the goal). */
const GOAL = 0.1;

export async function runCheckBench(options: CheckBenchOptions): Promise<CheckBenchReport> {
  const { say } = options;
  const local = new LocalNixWay(options.maxJobs * options.machineNames.length, options.timeoutMs);
  const plain = new NixfarmWay({ machineNames: options.machineNames, jobsPerMachine: options.maxJobs, timeoutMs: options.timeoutMs });
  const checking = new NixfarmWay({
    machineNames: options.machineNames,
    jobsPerMachine: options.maxJobs,
    timeoutMs: options.timeoutMs,
    coordinatorArgs: ['--check-fraction', '1'],
  });
  const times = new Map<string, { local: number[]; plain: number[]; checked: number[]; drain: number[]; ok: number; built: number; same: number }>();
  for (const w of options.workloads) times.set(w.id, { local: [], plain: [], checked: [], drain: [], ok: 0, built: 0, same: 0 });
  for (const w of options.workloads) {
    for (let rep = 0; rep < options.reps; rep++) {
      const run = await local.run(w, freshSalt(), (line) => say(`${w.id} (a): ${line}`));
      times.get(w.id)!.local.push(run.makespanMs);
      say(`${w.id} (a) local nix-build: ${(run.makespanMs / 1000).toFixed(2)} s`);
    }
  }
  // One farm at a time: two would share the machine's cores.
  await plain.start();
  try {
    for (const w of options.workloads) {
      for (let rep = 0; rep < options.reps; rep++) {
        const run = await plain.run(w, freshSalt(), (line) => say(`${w.id} (c): ${line}`));
        times.get(w.id)!.plain.push(run.makespanMs);
        say(`${w.id} (c) nixfarm: ${(run.makespanMs / 1000).toFixed(2)} s`);
      }
    }
  } finally {
    await plain.stop();
  }
  await checking.start();
  try {
    for (const w of options.workloads) {
      for (let rep = 0; rep < options.reps; rep++) {
        const run = await checking.run(w, freshSalt(), (line) => say(`${w.id} (c'): ${line}`));
        const ended = Date.now();
        const t = times.get(w.id)!;
        t.checked.push(run.makespanMs);
        const verdict = await drainedChecks(checking, run, options.timeoutMs);
        t.drain.push(Date.now() - ended);
        t.ok += verdict.reproducible;
        t.built += verdict.built;
        t.same += verdict.sameWorker;
        say(
          `${w.id} (c') nixfarm --check-fraction 1: ${(run.makespanMs / 1000).toFixed(2)} s; ${verdict.reproducible} of ${verdict.built} builds checked reproducible on the other worker ${((Date.now() - ended) / 1000).toFixed(1)} s after the run`,
        );
      }
    }
  } finally {
    await checking.stop();
  }
  const rows: CheckBenchRow[] = options.workloads.map((w) => {
    const t = times.get(w.id)!;
    const nixfarmMs = median(t.plain) ?? Number.NaN;
    const checkedMs = median(t.checked) ?? Number.NaN;
    return {
      workload: w.description,
      derivations: w.fixture.expectedDrvCount,
      localMs: median(t.local) ?? Number.NaN,
      nixfarmMs,
      checkedMs,
      overhead: checkedMs / nixfarmMs - 1,
      checked: t.ok,
      built: t.built,
      sameWorker: t.same,
      drainMs: median(t.drain) ?? Number.NaN,
    };
  });
  const goals = rows.flatMap((r) => [
    {
      goal: `${r.workload}: the run's own time with every build checked at most ${GOAL * 100}% longer`,
      measured: `${(r.checkedMs / 1000).toFixed(2)} s against ${(r.nixfarmMs / 1000).toFixed(2)} s (${r.overhead >= 0 ? '+' : ''}${(r.overhead * 100).toFixed(1)}%)`,
      met: r.overhead <= GOAL,
    },
    {
      goal: `${r.workload}: every build checked, on the other worker`,
      measured: `${r.checked} of ${r.built} reproducible, ${r.sameWorker} on the builder`,
      met: r.checked === r.built && r.sameWorker === 0,
    },
  ]);
  return { reps: options.reps, maxJobs: options.maxJobs, rows, goals };
}

/** Waits until every build of the run has an ended check; counts them. */
async function drainedChecks(way: NixfarmWay, run: WayRun, timeoutMs: number): Promise<{ built: number; reproducible: number; sameWorker: number }> {
  const rows = run.nixfarmRows ?? [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const checks = await Promise.all(rows.map((r) => way.running.api<CheckView>(`/api/checks/${hashPart(r.drvPath)}`).catch(() => undefined)));
    const ended = checks.filter((c) => c !== undefined && ['reproducible', 'not-reproducible', 'failed', 'skipped', 'cancelled'].includes(c.state));
    if (ended.length === rows.length) {
      return {
        built: rows.length,
        reproducible: ended.filter((c) => c!.state === 'reproducible').length,
        sameWorker: rows.filter((r, i) => checks[i]?.checker === r.worker).length,
      };
    }
    if (Date.now() > deadline) throw new Error(`checks of ${rows.length - ended.length} of ${rows.length} builds did not end in ${timeoutMs} ms`);
    await sleep(250);
  }
}

export function formatCheckReport(report: CheckBenchReport): string {
  const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
  const header = ['workload', 'derivations', 'local nix-build', 'nixfarm', 'nixfarm, all checked', 'overhead', 'checks drained after'];
  const rows = report.rows.map((r) => [
    r.workload,
    String(r.derivations),
    s(r.localMs),
    s(r.nixfarmMs),
    s(r.checkedMs),
    `${r.overhead >= 0 ? '+' : ''}${(r.overhead * 100).toFixed(1)}%`,
    s(r.drainMs),
  ]);
  return benchSection(
    `\nreproducibility checks (--check-fraction 1) beside the run, --max-jobs ${report.maxJobs} per worker, median of ${report.reps}:`,
    header,
    rows,
    report.goals,
  );
}
