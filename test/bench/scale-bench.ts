// The scale-out part of `npm run bench` (`--only scale-out`): one DAG of
// 1-second sleeping builds on farms of 2, 8 and 20 simulated machines (4
// slots each, one private Redis), against the ideal bound max(total work /
// slots, critical path). Beside each makespan: lock-renewal failures and
// stalled jobs (both must be 0), and where the CPU went (coordinator, Redis,
// workers), since on a small machine that is what limits many workers.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { QueueEvents } from 'bullmq';
import { bullmqOptions, hashPart, queueNameFor } from '@nixfarm/shared';
import { freshSalt, layeredDag } from '../harness/nix-fixtures.js';
import type { TestFarm } from '../harness/test-farm.js';
import { CpuAccount } from './cpu-account.js';
import { machineBusyTicks, ProcessTable, TICKS_PER_SECOND, waitForQuietMachine } from './foreign-cpu.js';
import { checkAllBuilt } from './output-check.js';
import { allButFirst, goalLines, textTable } from './text-table.js';
import { NixfarmWay } from './way-nixfarm.js';
import type { Workload } from './workloads.js';

export interface ScaleBenchOptions {
  /** fixture directory */
  dir: string;
  reps: number;
  quick: boolean;
  system: string;
  timeoutMs: number;
  /** before each measured run, wait up to this many seconds for a quiet machine (0: do not wait) */
  waitIdleSeconds: number;
  quietCores: number;
  say: (line: string) => void;
}

/** Where the CPU went during one run, seconds. */
export interface ScaleCpu {
  /** the coordinator's Node process */
  coordinator: number;
  /** processes the coordinator started (nix-store sessions, registrations) */
  coordinatorChildren: number;
  redis: number;
  /** the workers' Node processes */
  workers: number;
  /** everything the workers started: serve sessions, Nix builds (sandbox set-up, the builders) */
  workerChildren: number;
  /** the bench process and what it started that is no part of the farm: the `nixfarm build` client and its nix-instantiate */
  client: number;
  /** processes outside the bench (other sessions on the machine) */
  foreign: number;
  /** the machine's busy time in all */
  machine: number;
}

export interface ScaleRun {
  workers: number;
  slots: number;
  derivations: number;
  salt: string;
  makespanMs: number;
  idealMs: number;
  /** makespan / ideal */
  ratio: number;
  buildsPerSecond: number;
  /** 'lock renewal failed' lines the workers logged during the run */
  lockRenewalFailures: number;
  /** BullMQ 'stalled' events on the build queue during the run */
  stalledEvents: number;
  /** the run's derivations started more than once */
  retriedDerivations: number;
  /** each of them, with the farm's warnings and errors that name it: why it ran again */
  retried: Array<{ name: string; attempts: number; worker?: string; logLines: string[] }>;
  cpuSeconds: ScaleCpu;
  /** VmHWM of the coordinator's Node process after the run, KiB */
  coordinatorPeakRssKiB: number;
}

export interface ScaleBenchReport {
  dag: { layers: number; width: number; derivations: number; sleepSeconds: number; criticalPathSeconds: number };
  jobsPerWorker: number;
  reps: number;
  setup: string;
  idealDefinition: string;
  runs: ScaleRun[];
  goals: Array<{ goal: string; measured: string; met: boolean }>;
}

/** Slots per simulated machine (`--max-jobs`), as the issue sets them. */
const JOBS_PER_WORKER = 4;
const SLEEP_SECONDS = 1;
/** 4 x 500 + top = 2,001 builds, critical path 5 s: far below 2,001 s / 80 slots = 25 s, so slots are the bound at every count. */
const FULL = { layers: 4, width: 500, workerCounts: [2, 8, 20] };
const QUICK = { layers: 2, width: 20, workerCounts: [2, 4] };
/** How much the largest farm's makespan may exceed the ideal bound (the goal). */
const GOAL = 0.1;

const IDEAL_DEFINITION = [
  'ideal = max(total work / slots, critical path): total work = derivations x the 1 s each builder sleeps, slots = workers x --max-jobs,',
  '  critical path = the longest chain of derivations x 1 s. It ignores evaluation, copies, Nix overheads and dispatch: makespan / ideal',
  '  measures all of them together. makespan = start of `nixfarm build` (evaluation and submission included) to its exit.',
  'CPU columns: /proc/<pid>/stat utime+stime over the run, / derivations; the Nix columns: the processes it started (live ones and reaped;',
  "  the workers' through a cpuacct cgroup, which also keeps the sandboxed builders Nix detaches);",
  "  client and bench: `nixfarm build`, its nix-instantiate, the bench itself; other processes: the machine's busy time (/proc/stat) minus",
  "  all of the bench's (other sessions); cores busy: machine busy time / makespan.",
].join('\n');

function countLines(file: string, needle: string): number {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.includes(needle)).length;
  } catch {
    return 0;
  }
}

function peakRssKiB(pid: number | undefined): number {
  try {
    return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** CPU ticks of the farm's parts at one moment; the workers' through their cgroup when there is one (it keeps the sandboxed builders). */
function farmTicks(farm: TestFarm, workerAccount: CpuAccount | undefined): Record<keyof ScaleCpu, number> {
  const table = new ProcessTable();
  const coordinatorPid = farm.coordinator.pid;
  const workerPids = [...farm.workers.values()].map((w) => w.process.pid);
  const workers = workerPids.reduce<number>((sum, pid) => sum + table.ownTicks(pid), 0);
  const workerTrees = workerPids.reduce<number>((sum, pid) => sum + table.treeTicks(pid), 0);
  const workersAll = workerAccount === undefined ? workerTrees : workerAccount.seconds() * TICKS_PER_SECOND;
  const farmTotal = table.treeTicks(coordinatorPid) + table.ownTicks(farm.redis.pid) + workerTrees;
  // the workers are the bench's descendants, but not the builders Nix detached from them
  const bench = table.treeTicks(process.pid) + (workersAll - workerTrees);
  const machine = machineBusyTicks();
  return {
    coordinator: table.ownTicks(coordinatorPid),
    coordinatorChildren: table.treeTicks(coordinatorPid) - table.ownTicks(coordinatorPid),
    redis: table.ownTicks(farm.redis.pid),
    workers,
    workerChildren: workersAll - workers,
    client: bench - farmTotal - (workersAll - workerTrees),
    foreign: machine - bench,
    machine,
  };
}

const LOCK_RENEWAL_FAILED = 'lock renewal failed';
/** pino's warn level: warnings and errors are what explain a second attempt */
const WARN_LEVEL = 40;
const MAX_LINES = 8;

/** The coordinator's and workers' warning and error lines that name this derivation. */
function warningsAbout(farm: TestFarm, drvPath: string): string[] {
  const hash = hashPart(drvPath);
  const files = [join(farm.dir, 'coordinator.log'), ...[...farm.workers.values()].map((w) => w.logFile)];
  const lines: string[] = [];
  for (const file of files) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      if (!line.includes(hash)) continue;
      const level = Number(/"level":(\d+)/.exec(line)?.[1] ?? WARN_LEVEL);
      if (level >= WARN_LEVEL) lines.push(line.slice(0, 400));
    }
  }
  return lines.slice(0, MAX_LINES);
}

function lockRenewalFailures(farm: TestFarm): number {
  return [...farm.workers.values()].reduce((sum, w) => sum + countLines(w.logFile, LOCK_RENEWAL_FAILED), 0);
}

/** One measured run on a started farm: the build, and what the farm spent and suffered meanwhile. */
async function measuredRun(
  way: NixfarmWay,
  workload: Workload,
  workers: number,
  options: ScaleBenchOptions,
  criticalPathMs: number,
  workerAccount: CpuAccount | undefined,
): Promise<ScaleRun> {
  const farm = way.running;
  const salt = freshSalt();
  const tag = `${workers} workers`;
  // BullMQ's stalled checker (run by the workers) announces every job it moves back on the queue's event stream.
  const events = new QueueEvents(
    queueNameFor({ system: options.system, requiredFeatures: [] }),
    bullmqOptions({ host: '127.0.0.1', port: Number(new URL(farm.redis.url).port) }),
  );
  let stalledEvents = 0;
  events.on('stalled', () => stalledEvents++);
  try {
    await events.waitUntilReady();
    if (options.waitIdleSeconds > 0) {
      const used = await waitForQuietMachine(options.quietCores, options.waitIdleSeconds);
      if (used >= options.quietCores)
        options.say(`${tag}: other processes still use ${used.toFixed(2)} cores after ${options.waitIdleSeconds} s; running anyway`);
    }
    options.say(`${tag}: building ${workload.fixture.expectedDrvCount} derivations, salt ${salt}`);
    const failuresBefore = lockRenewalFailures(farm);
    const before = farmTicks(farm, workerAccount);
    const run = await way.run(workload, salt, (line) => options.say(`${tag}: ${line}`));
    const after = farmTicks(farm, workerAccount);
    // the stream is read in blocking calls: give the last events a moment to arrive
    await new Promise((r) => setTimeout(r, 1500));
    await checkAllBuilt(workload, salt);
    const derivations = workload.fixture.expectedDrvCount;
    const retried = (run.nixfarmRows ?? []).filter((d) => d.attempts > 1);
    const slots = workers * JOBS_PER_WORKER;
    const idealMs = Math.max((derivations * SLEEP_SECONDS * 1000) / slots, criticalPathMs);
    const cpuSeconds = Object.fromEntries(
      (Object.keys(after) as Array<keyof ScaleCpu>).map((k) => [k, Number(((after[k] - before[k]) / TICKS_PER_SECOND).toFixed(2))]),
    ) as unknown as ScaleCpu;
    const result: ScaleRun = {
      workers,
      slots,
      derivations,
      salt,
      makespanMs: Math.round(run.makespanMs),
      idealMs,
      ratio: run.makespanMs / idealMs,
      buildsPerSecond: derivations / (run.makespanMs / 1000),
      lockRenewalFailures: lockRenewalFailures(farm) - failuresBefore,
      stalledEvents,
      retriedDerivations: retried.length,
      retried: retried.map((d) => ({
        name: d.name,
        attempts: d.attempts,
        ...(d.worker === undefined ? {} : { worker: d.worker }),
        logLines: warningsAbout(farm, d.drvPath),
      })),
      cpuSeconds,
      coordinatorPeakRssKiB: peakRssKiB(farm.coordinator.pid),
    };
    options.say(
      `${tag}: ${(run.makespanMs / 1000).toFixed(2)} s, ${result.ratio.toFixed(2)}x the ideal ${(idealMs / 1000).toFixed(2)} s; machine busy ${cpuSeconds.machine} s of CPU`,
    );
    return result;
  } finally {
    await events.close();
  }
}

export async function runScaleBench(options: ScaleBenchOptions): Promise<ScaleBenchReport> {
  const shape = options.quick ? QUICK : FULL;
  const fixture = layeredDag({ dir: options.dir, layers: shape.layers, width: shape.width, sleepSeconds: SLEEP_SECONDS });
  // every node of a layer depends on one of the layer below, and the top on the last layer: layers + 1 builds in a row
  const criticalPathSeconds = (shape.layers + 1) * SLEEP_SECONDS;
  // the id only labels messages (the warm-up of run-bench.ts borrows one the same way)
  const workload: Workload = {
    id: 'dag-500',
    description: `layered DAG of ${SLEEP_SECONDS} s sleeps, ${shape.layers} x ${shape.width} + 1 top = ${fixture.expectedDrvCount} derivations`,
    fixture,
  };
  const runs: ScaleRun[] = [];
  for (const workers of shape.workerCounts) {
    const names = Array.from({ length: workers }, (_, i) => `scale-${i + 1}`);
    const way = new NixfarmWay({ machineNames: names, jobsPerMachine: JOBS_PER_WORKER, timeoutMs: options.timeoutMs });
    options.say(`${workers} workers: starting a fresh farm`);
    await way.start();
    const workerAccount = CpuAccount.create(`workers-${workers}`);
    try {
      // unmeasured: every slot busy once, so that the stores and serve sessions exist before the clock runs
      const warmUp: Workload = {
        id: 'dag-50',
        description: 'warm-up',
        fixture: layeredDag({ dir: options.dir, layers: 1, width: workers * JOBS_PER_WORKER }),
      };
      await way.run(warmUp, freshSalt(), () => undefined);
      const table = new ProcessTable();
      workerAccount?.add([...way.running.workers.values()].flatMap((w) => table.tree(w.process.pid)));
      for (let rep = 0; rep < options.reps; rep++) runs.push(await measuredRun(way, workload, workers, options, criticalPathSeconds * 1000, workerAccount));
    } finally {
      await way.stop();
      workerAccount?.close();
    }
  }
  const largest = Math.max(...shape.workerCounts);
  const top = runs.filter((r) => r.workers === largest);
  const worstRatio = Math.max(...top.map((r) => r.ratio));
  const failures = runs.reduce((s, r) => s + r.lockRenewalFailures, 0);
  const stalled = runs.reduce((s, r) => s + r.stalledEvents, 0);
  const retried = runs.reduce((s, r) => s + r.retriedDerivations, 0);
  const goals = [
    {
      goal: `${largest} workers: makespan within ${GOAL * 100}% of the ideal bound`,
      measured: top.map((r) => `${(r.makespanMs / 1000).toFixed(2)} s against ${(r.idealMs / 1000).toFixed(2)} s (${r.ratio.toFixed(2)}x)`).join(', '),
      met: worstRatio <= 1 + GOAL,
    },
    { goal: 'no lock-renewal failure', measured: `${failures} 'lock renewal failed' lines in the workers' logs`, met: failures === 0 },
    {
      goal: 'no stalled job',
      measured: `${stalled} stalled events on the build queue, ${retried} derivations started more than once`,
      met: stalled === 0 && retried === 0,
    },
  ];
  return {
    dag: { layers: shape.layers, width: shape.width, derivations: fixture.expectedDrvCount, sleepSeconds: SLEEP_SECONDS, criticalPathSeconds },
    jobsPerWorker: JOBS_PER_WORKER,
    reps: options.reps,
    setup: `a fresh farm per worker count (private redis, coordinator on the host store, workers in simulated machines, log level info, --max-jobs ${JOBS_PER_WORKER}), one unmeasured warm-up build filling every slot, then the DAG with a fresh salt`,
    idealDefinition: IDEAL_DEFINITION,
    runs,
    goals,
  };
}

export function formatScaleReport(report: ScaleBenchReport): string {
  const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
  const perDrv = (seconds: number, r: ScaleRun): string => `${((seconds * 1000) / r.derivations).toFixed(1)} ms`;
  const header = [
    'workers',
    'slots',
    'makespan',
    'ideal',
    'makespan/ideal',
    'builds/s',
    'lock failures',
    'stalled',
    'coordinator CPU/drv',
    'Redis CPU/drv',
    'coordinator peak RSS',
  ];
  const rows = report.runs.map((r) => [
    String(r.workers),
    String(r.slots),
    s(r.makespanMs),
    s(r.idealMs),
    `${r.ratio.toFixed(2)}x`,
    r.buildsPerSecond.toFixed(1),
    String(r.lockRenewalFailures),
    `${r.stalledEvents} / ${r.retriedDerivations}`,
    perDrv(r.cpuSeconds.coordinator, r),
    perDrv(r.cpuSeconds.redis, r),
    `${Math.round(r.coordinatorPeakRssKiB / 1024)} MiB`,
  ]);
  const cpuHeader = [
    'workers',
    'coordinator',
    "coordinator's Nix",
    'Redis',
    'workers (Node)',
    "workers' Nix and builds",
    'client and bench',
    'other processes',
    'machine busy',
    'cores busy',
  ];
  const cores = (r: ScaleRun): string => `${(r.cpuSeconds.machine / (r.makespanMs / 1000)).toFixed(2)} of ${cpus().length}`;
  const cpuRows = report.runs.map((r) => [
    String(r.workers),
    perDrv(r.cpuSeconds.coordinator, r),
    perDrv(r.cpuSeconds.coordinatorChildren, r),
    perDrv(r.cpuSeconds.redis, r),
    perDrv(r.cpuSeconds.workers, r),
    perDrv(r.cpuSeconds.workerChildren, r),
    perDrv(r.cpuSeconds.client, r),
    perDrv(r.cpuSeconds.foreign, r),
    perDrv(r.cpuSeconds.machine, r),
    cores(r),
  ]);
  const d = report.dag;
  return [
    `\nscale-out: ${d.derivations} derivations (${d.layers} x ${d.width} + 1 top) of ${d.sleepSeconds} s sleeps, critical path ${d.criticalPathSeconds} s, --max-jobs ${report.jobsPerWorker} per worker, ${report.reps} repetition(s) each:`,
    textTable(header, rows, allButFirst(header.length)),
    '(stalled: BullMQ stalled events on the build queue / derivations started more than once)',
    ...report.runs.flatMap((r) =>
      r.retried.map(
        (d) =>
          `${r.workers} workers: ${d.name} started ${d.attempts} times (last on ${d.worker ?? '?'}); ${d.logLines.length} warnings name it: ${d.logLines.join(' | ') || '-'}`,
      ),
    ),
    '',
    'CPU per derivation, by process, during the run:',
    textTable(cpuHeader, cpuRows, allButFirst(cpuHeader.length)),
    '',
    report.idealDefinition,
    ...goalLines(report.goals),
    '',
  ].join('\n');
}
