// `npm run bench`: the same workloads built three ways in one session, with
// fresh salts so that nothing is cached: (a) local nix-build, (b) Nix's own
// remote builds over SSH to simulated machines, (c) nixfarm with workers on
// the same kind of machines. Table on stdout, progress on stderr, JSON under
// bench/results/. See bench-report.ts for what each figure means.
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { freshSalt, layeredDag } from '../harness/nix-fixtures.js';
import { onProcessExit, removeTreeSync } from '../harness/process-cleanup.js';
import { REPO_ROOT } from '../harness/test-farm.js';
import { parseBenchOptions, type BenchOptions } from './bench-options.js';
import { formatReport, OVERHEAD_DEFINITION, writeReport, type BenchReport, type WayResult, type WorkloadResult } from './bench-report.js';
import { evaluateTarget, TARGETS } from './bench-targets.js';
import { formatJobsetReport, runJobsetBench, type JobsetBenchReport } from './jobset-bench.js';
import { formatCheckReport, runCheckBench, type CheckBenchReport } from './check-bench.js';
import { formatClosureReport, runClosureBench, type ClosureBenchReport } from './closure-bench.js';
import { formatSlowLinkReport, runSlowLinkBench, type SlowLinkBenchReport } from './slow-link-bench.js';
import { formatScaleReport, runScaleBench, type ScaleBenchReport } from './scale-bench.js';
import type { BenchWay, NixfarmDerivationRow, WayId, WayRun } from './bench-way.js';
import { calibrateMebibytes } from './cpu-bound-fixture.js';
import { cpuSnapshot, foreignCores, waitForQuietMachine } from './foreign-cpu.js';
import { nixfarmProfile } from './nixfarm-profile.js';
import { checkAllBuilt } from './output-check.js';
import { median } from './statistics.js';
import { LocalNixWay } from './way-local-nix.js';
import { NixfarmWay } from './way-nixfarm.js';
import { NixRemoteWay } from './way-nix-remote.js';
import { FULL_SIZES, makeWorkload, QUICK_SIZES, type Workload, type WorkloadId } from './workloads.js';

/** The worker machines of (b) and (c): two, as the targets assume. */
const MACHINE_NAMES = ['bench-1', 'bench-2'];
/** Longest one build command may take before the bench gives up on it. */
const RUN_TIMEOUT_MS = 30 * 60_000;
/** Below this much CPU used by others (cores), the machine counts as quiet for --wait-idle. */
const QUIET_CORES = 0.25;

const say = (line: string): void => void process.stderr.write(`bench: ${line}\n`);

function commandOutput(command: string, args: readonly string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout.trim();
}

function makeWay(id: WayId, options: BenchOptions, dir: string, system: string): BenchWay {
  switch (id) {
    case 'a':
      return new LocalNixWay(options.maxJobs * MACHINE_NAMES.length, RUN_TIMEOUT_MS);
    case 'b':
      return new NixRemoteWay({ dir: join(dir, 'way-b'), machineNames: MACHINE_NAMES, jobsPerMachine: options.maxJobs, system, timeoutMs: RUN_TIMEOUT_MS });
    case 'c':
      return new NixfarmWay({ machineNames: MACHINE_NAMES, jobsPerMachine: options.maxJobs, timeoutMs: RUN_TIMEOUT_MS });
  }
}

interface Measured {
  salt: string;
  run: WayRun;
  /** cores' worth of CPU other processes on the machine used during the run */
  foreignCores: number;
}

async function main(): Promise<void> {
  const options = parseBenchOptions(process.argv.slice(2));
  const startedAt = new Date().toISOString();
  const dir = mkdtempSync('/tmp/nixfarm-bench-');
  const unregister = onProcessExit(() => removeTreeSync(dir));
  const system = commandOutput('nix-instantiate', ['--eval', '--expr', 'builtins.currentSystem', '--json']).replace(/"/g, '');
  const idleCheck = cpuSnapshot();
  await new Promise((r) => setTimeout(r, 2000));
  const busyBefore = foreignCores(idleCheck, cpuSnapshot());
  if (busyBefore > QUIET_CORES) say(`warning: other processes use ${busyBefore.toFixed(2)} of ${cpus().length} cores right now: they will distort the figures`);
  say(
    `work dir ${dir}; ways ${options.ways.join(',')}; workloads ${options.workloads.join(',')}; ${options.reps} rep(s); J=${options.maxJobs}${options.quick ? '; quick' : ''}`,
  );

  let cpuMebibytes = 1;
  if (options.workloads.includes('cpu-40')) {
    cpuMebibytes = calibrateMebibytes(1);
    say(`CPU-bound builder calibrated: sha256 of ${cpuMebibytes} MiB of zeros is about 1 s of CPU here`);
  }
  const sizes = options.quick ? QUICK_SIZES : FULL_SIZES;
  const fixtures = join(dir, 'fixtures');
  const workloads = options.workloads.map((id) => makeWorkload(id, sizes, fixtures, cpuMebibytes));
  const warmUp: Workload = { id: 'dag-50', description: 'warm-up', fixture: layeredDag({ dir: fixtures, layers: 2, width: 2 }) };

  const resultsDir = join(REPO_ROOT, 'bench', 'results');
  const measured = new Map<string, Measured[]>();
  const key = (w: WorkloadId, way: WayId): string => `${w}/${way}`;
  const titles = new Map<WayId, string>();
  /** The report of what has been measured so far (complete once every way ran). */
  let jobset: JobsetBenchReport | undefined;
  let checks: CheckBenchReport | undefined;
  let scale: ScaleBenchReport | undefined;
  const summarise = (complete: boolean): BenchReport => {
    const results: WorkloadResult[] = [];
    const profiles: BenchReport['profiles'] = {};
    for (const workload of workloads) {
      const localSpans = (measured.get(key(workload.id, 'a')) ?? []).flatMap((m) => m.run.spansMs);
      const localSpan = median(localSpans);
      const ways: WorkloadResult['ways'] = {};
      for (const wayId of options.ways) {
        const runs = measured.get(key(workload.id, wayId)) ?? [];
        if (runs.length === 0) continue; // not run (yet)
        const makespans = runs.map((m) => m.run.makespanMs);
        const repSpans = runs.map((m) => median(m.run.spansMs)!);
        const result: WayResult = {
          way: wayId,
          title: titles.get(wayId) ?? wayId,
          salts: runs.map((m) => m.salt),
          makespansMs: makespans,
          foreignCores: runs.map((m) => Number(m.foreignCores.toFixed(2))),
          medianMakespanMs: median(makespans)!,
          medianSpanMs: median(repSpans)!,
        };
        if (localSpan !== undefined) result.overheadMs = median(repSpans.map((s) => s - localSpan));
        ways[wayId] = result;
      }
      for (const w of Object.values(ways)) {
        if (ways.a !== undefined) w.ratioToA = w.medianMakespanMs / ways.a.medianMakespanMs;
        if (ways.b !== undefined) w.ratioToB = w.medianMakespanMs / ways.b.medianMakespanMs;
      }
      const medians: Partial<Record<WayId, number>> = {};
      for (const [id, w] of Object.entries(ways) as Array<[WayId, WayResult]>) medians[id] = w.medianMakespanMs;
      results.push({
        workload: workload.id,
        description: workload.description,
        derivations: workload.fixture.expectedDrvCount,
        ways,
        targets: TARGETS.filter((t) => t.workload === workload.id).map((t) => evaluateTarget(t, medians)),
      });
      const farmRuns = (measured.get(key(workload.id, 'c')) ?? []).map((m) => m.run.nixfarmRows).filter((r): r is NixfarmDerivationRow[] => r !== undefined);
      if (farmRuns.length > 0) profiles[workload.id] = nixfarmProfile(farmRuns, options.maxJobs);
    }

    return {
      startedAt,
      complete,
      finishedAt: new Date().toISOString(),
      quick: options.quick,
      machine: {
        nixVersion: commandOutput('nix-build', ['--version']),
        cores: cpus().length,
        cpuModel: cpus()[0]?.model ?? 'unknown',
        nodeVersion: process.version,
        kernel: release(),
        system,
      },
      settings: {
        maxJobsPerWorker: options.maxJobs,
        localJobs: options.maxJobs * MACHINE_NAMES.length,
        workers: MACHINE_NAMES,
        reps: options.reps,
        ways: options.ways,
        workloads: options.workloads,
        ...(options.workloads.includes('cpu-40') ? { cpuMebibytes } : {}),
        setup:
          'each way set up once, on fresh simulated machines (mount namespaces with empty stores), one unmeasured warm-up build, then every workload x repetition with its own fresh salt; (a) host store; (b) sshd per machine; (c) private redis + coordinator on the host store + one worker per machine, log level info',
      },
      overheadDefinition: OVERHEAD_DEFINITION,
      results,
      profiles,
      ...(jobset === undefined ? {} : { jobset }),
      ...(checks === undefined ? {} : { checks }),
      ...(closure === undefined ? {} : { closure }),
      ...(slowLink === undefined ? {} : { slowLink }),
      ...(scale === undefined ? {} : { scale }),
    };
  };

  // One way at a time, set up once: no idle farm or sshd competes with another way's builds. The slowest, (b), last.
  for (const wayId of (['a', 'c', 'b'] as const).filter((w) => options.ways.includes(w) && options.workloads.length > 0)) {
    const way = makeWay(wayId, options, dir, system);
    titles.set(wayId, way.title);
    say(`(${wayId}) ${way.title}: starting`);
    try {
      await way.start();
      // unmeasured: a fresh machine's first build also initialises its store
      const warmSalt = freshSalt();
      await way.run(warmUp, warmSalt, () => undefined);
      await checkAllBuilt(warmUp, warmSalt);
      for (const workload of workloads) {
        for (let rep = 1; rep <= options.reps; rep++) {
          const salt = freshSalt();
          const tag = `(${wayId}) ${workload.id} rep ${rep}/${options.reps}`;
          if (options.waitIdleSeconds > 0) {
            const used = await waitForQuietMachine(QUIET_CORES, options.waitIdleSeconds);
            if (used >= QUIET_CORES)
              say(`${tag}: other processes still use ${used.toFixed(2)} cores after waiting ${options.waitIdleSeconds} s; running anyway`);
          }
          say(`${tag}: building ${workload.fixture.expectedDrvCount} derivations, salt ${salt}`);
          const before = cpuSnapshot();
          const run = await way.run(workload, salt, (line) => say(`${tag}: ${line}`));
          const foreign = foreignCores(before, cpuSnapshot());
          await checkAllBuilt(workload, salt);
          say(
            `${tag}: ${(run.makespanMs / 1000).toFixed(2)} s (other processes used ${foreign.toFixed(2)} cores meanwhile), all ${workload.fixture.expectedDrvCount} derivations' outputs valid in the host store`,
          );
          measured.set(key(workload.id, wayId), [...(measured.get(key(workload.id, wayId)) ?? []), { salt, run, foreignCores: foreign }]);
        }
      }
    } finally {
      await way.stop();
    }
    // after each way, so that a later failure or interruption keeps what was measured
    writeReport(resultsDir, summarise(false));
  }
  if (options.jobset) {
    say('jobset-2000: (a) local nix-instantiate + nix-store --realise, (b) the evaluator pool alone, (c) nixfarm streaming');
    jobset = await runJobsetBench({
      dir,
      reps: options.reps,
      quick: options.quick,
      maxJobs: options.maxJobs,
      machineNames: MACHINE_NAMES,
      timeoutMs: RUN_TIMEOUT_MS,
      say,
    });
  }
  let closure: ClosureBenchReport | undefined;
  if (options.closure) {
    say('closure-1g: a 1 GiB output out of one worker and into the other, against nix-store --export | nix-store --import and nix-build --builders');
    closure = await runClosureBench({ dir, reps: options.quick ? 1 : Math.min(options.reps, 2), quick: options.quick, timeoutMs: RUN_TIMEOUT_MS, say });
  }
  let slowLink: SlowLinkBenchReport | undefined;
  if (options.slowLink) {
    say('closure-slow-link: a compressible output out and in through a 100 Mbit/s link, --copy-compression none and zlib');
    slowLink = await runSlowLinkBench({ dir, quick: options.quick, timeoutMs: RUN_TIMEOUT_MS, say });
  }
  if (options.checkOverhead) {
    say("check-overhead: (a) local nix-build, (c) nixfarm, (c') nixfarm with --check-fraction 1");
    const cpu = calibrateMebibytes(1);
    checks = await runCheckBench({
      reps: options.reps,
      maxJobs: options.maxJobs,
      machineNames: MACHINE_NAMES,
      timeoutMs: RUN_TIMEOUT_MS,
      workloads: (['dag-50', 'cpu-40'] as const).map((id) => makeWorkload(id, options.quick ? QUICK_SIZES : FULL_SIZES, dir, cpu)),
      say,
    });
  }
  if (options.scaleOut) {
    say('scale-out: one DAG of 1 s sleeps on fresh farms of growing size, against the ideal bound');
    scale = await runScaleBench({
      dir: join(dir, 'scale'),
      reps: options.scaleReps,
      quick: options.quick,
      system,
      timeoutMs: RUN_TIMEOUT_MS,
      waitIdleSeconds: options.waitIdleSeconds,
      quietCores: QUIET_CORES,
      say,
    });
  }
  const report = summarise(true);

  if (options.workloads.length > 0) process.stdout.write(formatReport(report));
  if (jobset !== undefined) process.stdout.write(formatJobsetReport(jobset));
  if (checks !== undefined) process.stdout.write(formatCheckReport(checks));
  if (closure !== undefined) process.stdout.write(formatClosureReport(closure));
  if (slowLink !== undefined) process.stdout.write(formatSlowLinkReport(slowLink));
  if (scale !== undefined) process.stdout.write(formatScaleReport(scale));
  const file = writeReport(resultsDir, report);
  say(`wrote ${file} and latest.json`);
  unregister();
  removeTreeSync(dir);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench FAILED: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
