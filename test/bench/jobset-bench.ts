// The jobset part of `npm run bench` (`--only jobset-2000`): the issue's
// 2,000-attribute jobset (good attributes only, over a shared layered DAG)
// (a) one nix-instantiate of the whole set, then nix-store --realise of it
// locally; (b) nixfarm's evaluation alone (the evaluator pool, 1 and 2
// evaluators); (c) nixfarm evaluation streaming into builds on the bench's
// farm, and the same with the .drv files already in the store (building
// alone, near enough). Fresh salt per run: every .drv and output is new.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { JobsetEvaluation } from '@nixfarm/coordinator';
import type { DerivationView, RunView } from '@nixfarm/shared';
import { childProcesses } from '../harness/child-processes.js';
import { scaleJobsetFixture, type ScaleJobsetFixture } from '../harness/jobset-fixture.js';
import { freshSalt } from '../harness/nix-fixtures.js';
import { NIXFARM_BIN, TestFarm } from '../harness/test-farm.js';
import { median } from './statistics.js';
import { runTimed } from './timed-process.js';
import { benchSection } from './text-table.js';

export interface JobsetBenchOptions {
  dir: string;
  reps: number;
  quick: boolean;
  /** max-jobs per worker machine; local builds get twice that */
  maxJobs: number;
  machineNames: readonly string[];
  timeoutMs: number;
  say: (line: string) => void;
}

/** One way's medians over the repetitions; absent figures do not apply to the way. */
export interface JobsetWayResult {
  way: string;
  /** the client's start (`nixfarm build`, a Node process) to the first build's start, ms */
  firstBuildMs?: number;
  /** the coordinator's receipt of the submission (the evaluation's start) to the first build's start, ms */
  firstBuildAfterSubmitMs?: number;
  /** evaluation's own time, ms, and its attributes per second */
  evaluationMs?: number;
  attributesPerSecond?: number;
  /** the largest VmHWM of any evaluator process, KiB */
  evaluatorPeakRssKiB?: number;
  makespanMs: number;
}

export interface JobsetBenchReport {
  attributes: number;
  builds: number;
  reps: number;
  ways: JobsetWayResult[];
  goals: Array<{ goal: string; measured: string; met: boolean }>;
}

const ATTRIBUTES = 2000;
const QUICK_ATTRIBUTES = 200;
/** numbers folded in each derivation of the evaluation-heavy variant: about 1 ms of evaluation per attribute */
const HEAVY_EVAL_WORK = 10_000;
const quiet = pino({ level: 'silent' });

/** Peak resident set (VmHWM) of the processes it is told about, sampled every few ms while they live. */
class RssSampler {
  private readonly pids = new Set<number>();
  private peakKiB = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly discover?: () => number[]) {
    this.timer = setInterval(() => this.sample(), 5);
  }

  track(pid: number): void {
    this.pids.add(pid);
    this.sample();
  }

  stop(): number {
    clearInterval(this.timer);
    return this.peakKiB;
  }

  private sample(): void {
    for (const pid of this.discover?.() ?? []) this.pids.add(pid);
    for (const pid of this.pids) {
      try {
        const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
        if (hwm !== undefined) this.peakKiB = Math.max(this.peakKiB, Number(hwm));
      } catch {
        this.pids.delete(pid); // ended
      }
    }
  }
}

const NIX_OPTIONS = ['--option', 'substituters', '', '--option', 'sandbox', 'true', '--option', 'build-users-group', ''];

/** One nix-instantiate of the whole set, timed, with its peak RSS (GNU time) and the .drv paths it printed. */
async function instantiateWhole(
  fixture: ScaleJobsetFixture,
  salt: string,
  timeoutMs: number,
): Promise<{ drvs: string[]; rssKiB: number; startedAt: number; evaluationMs: number }> {
  const env = { ...process.env, NIX_CONFIG: 'substituters =' };
  const instantiate = await runTimed('/usr/bin/time', ['-f', 'peak-rss-kib %M', 'nix-instantiate', fixture.file, '--argstr', 'salt', salt, ...NIX_OPTIONS], {
    env,
    timeoutMs,
  });
  if (instantiate.exitCode !== 0) throw new Error(`nix-instantiate of the jobset failed:\n${instantiate.stderrLines.map((l) => l.text).join('\n')}`);
  const drvs = instantiate.stdout.split('\n').filter((l) => l.endsWith('.drv'));
  if (drvs.length !== fixture.expected.size) throw new Error(`nix-instantiate gave ${drvs.length} derivations, expected ${fixture.expected.size}`);
  const rssKiB = Number(/peak-rss-kib (\d+)/.exec(instantiate.stderrLines.map((l) => l.text).join('\n'))?.[1]);
  return { drvs, rssKiB, startedAt: instantiate.startedAt, evaluationMs: instantiate.endedAt - instantiate.startedAt };
}

/** (a) without building: one nix-instantiate of the whole set, the peer of the pool's evaluation. */
async function wholeEvaluation(fixture: ScaleJobsetFixture, salt: string, way: string, timeoutMs: number): Promise<JobsetWayResult> {
  const { rssKiB, evaluationMs } = await instantiateWhole(fixture, salt, timeoutMs);
  return { way, evaluationMs, attributesPerSecond: fixture.expected.size / (evaluationMs / 1000), evaluatorPeakRssKiB: rssKiB, makespanMs: evaluationMs };
}

/** (a): one nix-instantiate of the whole set (GNU time for its peak RSS), then one nix-store --realise of every .drv. */
async function localNix(fixture: ScaleJobsetFixture, salt: string, jobs: number, timeoutMs: number): Promise<JobsetWayResult> {
  const env = { ...process.env, NIX_CONFIG: 'substituters =' };
  const { drvs, rssKiB, startedAt, evaluationMs } = await instantiateWhole(fixture, salt, timeoutMs);
  const realise = await runTimed('nix-store', ['--realise', ...drvs, '-j', String(jobs), '--no-build-output', ...NIX_OPTIONS], { env, timeoutMs });
  if (realise.exitCode !== 0)
    throw new Error(
      `nix-store --realise of the jobset failed:\n${realise.stderrLines
        .slice(-20)
        .map((l) => l.text)
        .join('\n')}`,
    );
  return {
    way: `(a) nix-instantiate, then nix-store --realise -j${jobs}`,
    firstBuildMs: realise.startedAt - startedAt,
    evaluationMs,
    attributesPerSecond: fixture.expected.size / (evaluationMs / 1000),
    evaluatorPeakRssKiB: rssKiB,
    makespanMs: realise.endedAt - startedAt,
  };
}

/** (b): the evaluator pool alone, in this process. */
async function evaluationAlone(fixture: ScaleJobsetFixture, salt: string, workers: number, variant = ''): Promise<JobsetWayResult> {
  const sampler = new RssSampler();
  const started = performance.now();
  const evaluation = await JobsetEvaluation.open({
    source: { file: fixture.file, argstrs: [{ name: 'salt', value: salt }] },
    logger: quiet,
    nixOptions: [['substituters', '']],
    evalWorkers: workers,
    onPoolEvent: (event) => event.type === 'spawned' && sampler.track(event.pid),
  });
  let count = 0;
  try {
    for await (const result of evaluation.results()) {
      if ('error' in result) throw new Error(`${result.attr}: ${result.error}`);
      count++;
    }
  } finally {
    await evaluation.close();
  }
  const evaluationMs = performance.now() - started;
  if (count !== fixture.expected.size) throw new Error(`the pool evaluated ${count} attributes, expected ${fixture.expected.size}`);
  return {
    way: `(b${variant}) nixfarm evaluation alone, ${workers} evaluator${workers === 1 ? '' : 's'}`,
    evaluationMs,
    attributesPerSecond: count / (evaluationMs / 1000),
    evaluatorPeakRssKiB: sampler.stop(),
    makespanMs: evaluationMs,
  };
}

/** (c): `nixfarm build --jobset` on the farm; `way` names the variant. */
async function nixfarmJobset(farm: TestFarm, fixture: ScaleJobsetFixture, salt: string, way: string, timeoutMs: number): Promise<JobsetWayResult> {
  const sampler = new RssSampler(() => childProcesses(farm.coordinator.pid!, 'nix-instantiate').map((p) => p.pid));
  const args = [NIXFARM_BIN, 'build', '--coordinator', farm.address.httpUrl, fixture.file, '--jobset', '--eval-workers', '2', '--argstr', 'salt', salt];
  const result = await runTimed(process.execPath, args, { env: { ...process.env, NIX_CONFIG: 'substituters =', NIXFARM_TOKEN: farm.adminToken }, timeoutMs });
  const peak = sampler.stop();
  const stderr = result.stderrLines.map((l) => l.text).join('\n');
  if (result.exitCode !== 0)
    throw new Error(`nixfarm build --jobset exited with ${result.exitCode ?? result.signal}:\n${stderr.slice(-3000)}\n${farm.diagnostics()}`);
  const runId = /run (\w+)/.exec(stderr)?.[1];
  const run = await farm.api<RunView>(`/api/runs/${runId}`);
  const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
  const starts = derivations.flatMap((d) => (d.startedAt === undefined ? [] : [d.startedAt]));
  const evaluation = run.evaluation;
  const evaluationMs = evaluation?.endedAt === undefined ? undefined : evaluation.endedAt - evaluation.startedAt;
  return {
    way,
    firstBuildMs: Math.min(...starts) - result.startedAt,
    ...(evaluation === undefined ? {} : { firstBuildAfterSubmitMs: Math.min(...starts) - evaluation.startedAt }),
    ...(evaluationMs === undefined ? {} : { evaluationMs, attributesPerSecond: fixture.expected.size / (evaluationMs / 1000) }),
    evaluatorPeakRssKiB: peak,
    makespanMs: result.endedAt - result.startedAt,
  };
}

function medians(runs: JobsetWayResult[]): JobsetWayResult {
  const of = (pick: (r: JobsetWayResult) => number | undefined): number | undefined => median(runs.flatMap((r) => (pick(r) === undefined ? [] : [pick(r)!])));
  const result: JobsetWayResult = { way: runs[0]!.way, makespanMs: of((r) => r.makespanMs)! };
  for (const key of ['firstBuildMs', 'firstBuildAfterSubmitMs', 'evaluationMs', 'attributesPerSecond', 'evaluatorPeakRssKiB'] as const) {
    const value = of((r) => r[key]);
    if (value !== undefined) result[key] = value;
  }
  return result;
}

export async function runJobsetBench(options: JobsetBenchOptions): Promise<JobsetBenchReport> {
  const attributes = options.quick ? QUICK_ATTRIBUTES : ATTRIBUTES;
  const fixture = scaleJobsetFixture({ attributes, layers: 4, width: 20, withFailures: false, dir: join(options.dir, 'jobset') });
  const runs = new Map<string, JobsetWayResult[]>();
  const keep = (result: JobsetWayResult): void => {
    runs.set(result.way, [...(runs.get(result.way) ?? []), result]);
    options.say(
      `jobset: ${result.way}: ${(result.makespanMs / 1000).toFixed(2)} s${result.firstBuildMs === undefined ? '' : `, first build after ${(result.firstBuildMs / 1000).toFixed(2)} s`}`,
    );
  };
  // The same jobset with evaluation work in every derivation (as a package set's attributes cost): where evaluation, not Nix's .drv writes, dominates.
  const heavy = scaleJobsetFixture({
    attributes,
    layers: 4,
    width: 20,
    withFailures: false,
    evalWork: HEAVY_EVAL_WORK,
    dir: join(options.dir, 'jobset-heavy'),
  });
  for (let rep = 0; rep < options.reps; rep++) {
    keep(await localNix(fixture, freshSalt(), options.maxJobs * options.machineNames.length, options.timeoutMs));
    keep(await evaluationAlone(fixture, freshSalt(), 1));
    keep(await evaluationAlone(fixture, freshSalt(), 2));
    keep(await wholeEvaluation(heavy, freshSalt(), "(a') evaluation-heavy variant: one nix-instantiate of the whole set", options.timeoutMs));
    keep(await evaluationAlone(heavy, freshSalt(), 1, "'"));
    keep(await evaluationAlone(heavy, freshSalt(), 2, "'"));
  }
  const farm = await TestFarm.start({ workers: options.machineNames.map((name) => ({ name, maxJobs: options.maxJobs })), logLevel: 'info' });
  try {
    for (let rep = 0; rep < options.reps; rep++) {
      keep(await nixfarmJobset(farm, fixture, freshSalt(), '(c) nixfarm evaluation streaming into builds', options.timeoutMs));
      // building alone, near enough: the .drv files exist already, so evaluation only finds them again
      const salt = freshSalt();
      const pre = await runTimed('nix-instantiate', [fixture.file, '--argstr', 'salt', salt, ...NIX_OPTIONS], { timeoutMs: options.timeoutMs });
      if (pre.exitCode !== 0) throw new Error('nix-instantiate before building alone failed');
      keep(await nixfarmJobset(farm, fixture, salt, '(c) the same with the .drv files already in the store (building alone)', options.timeoutMs));
    }
  } finally {
    await farm.stop();
  }
  const ways = [...runs.values()].map(medians);
  const find = (prefix: string): JobsetWayResult => ways.find((w) => w.way.startsWith(prefix))!;
  const whole = find('(a)');
  const twoEvaluators = find('(b) nixfarm evaluation alone, 2');
  const streaming = find('(c) nixfarm evaluation streaming');
  const buildingAlone = find('(c) the same');
  const bound = 1.15 * Math.max(twoEvaluators.makespanMs, buildingAlone.makespanMs);
  const speedup = whole.evaluationMs! / twoEvaluators.evaluationMs!;
  const heavySpeedup = find("(a')").evaluationMs! / find("(b') nixfarm evaluation alone, 2").evaluationMs!;
  return {
    attributes,
    builds: fixture.builds,
    reps: options.reps,
    ways,
    goals: [
      {
        goal: 'first build within 1 s of submission',
        measured: `${(streaming.firstBuildAfterSubmitMs! / 1000).toFixed(2)} s after the coordinator got it, ${(streaming.firstBuildMs! / 1000).toFixed(2)} s after the client started`,
        met: streaming.firstBuildAfterSubmitMs! <= 1000,
      },
      {
        goal: 'makespan <= 1.15 x max(evaluation alone, building alone)',
        measured: `${(streaming.makespanMs / 1000).toFixed(2)} s against ${(bound / 1000).toFixed(2)} s`,
        met: streaming.makespanMs <= bound,
      },
      {
        goal: `evaluation with 2 evaluators >= 1.5x faster than one nix-instantiate (${cpus().length} cores)`,
        measured: `${speedup.toFixed(2)}x`,
        met: speedup >= 1.5,
      },
      {
        goal: `the same on the evaluation-heavy variant (${HEAVY_EVAL_WORK} numbers folded per derivation)`,
        measured: `${heavySpeedup.toFixed(2)}x`,
        met: heavySpeedup >= 1.5,
      },
    ],
  };
}

export function formatJobsetReport(report: JobsetBenchReport): string {
  const s = (ms: number | undefined): string => (ms === undefined ? '-' : `${(ms / 1000).toFixed(2)} s`);
  const header = ['way', 'first build', 'from submit', 'evaluation', 'attrs/s', 'eval peak RSS', 'makespan'];
  const rows = report.ways.map((w) => [
    w.way,
    s(w.firstBuildMs),
    s(w.firstBuildAfterSubmitMs),
    s(w.evaluationMs),
    w.attributesPerSecond === undefined ? '-' : w.attributesPerSecond.toFixed(0),
    w.evaluatorPeakRssKiB === undefined ? '-' : `${(w.evaluatorPeakRssKiB / 1024).toFixed(0)} MiB`,
    s(w.makespanMs),
  ]);
  return benchSection(`\njobset of ${report.attributes} attributes (${report.builds} builds), median of ${report.reps}:`, header, rows, report.goals);
}
