import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { redisKeys, type DerivationView, type WorkerEvent } from '@nixfarm/shared';
import type { ChaosScenario, ScenarioOptions, ScenarioOutcome } from '../chaos-scenario.js';
import { auditRun, outcomeOf } from '../run-audit.js';
import { TestFarm, type CommandResult } from '../../harness/test-farm.js';
import { runIdOf } from '../../harness/build-timeline.js';
import { pollFor, sleep } from '../../harness/poll.js';
import { freshSalt, nixInstantiate, writeBusyboxDir } from '../../harness/nix-fixtures.js';

/**
 * Scenario 6: a worker loses its job's lock while its build goes on (its
 * node process is stopped, as a long GC pause or a partition would stop it;
 * the `nix-store --serve` session and the builder are other processes and
 * keep running). Another worker re-runs the same BullMQ job; then the first
 * one wakes up, finishes and reports too. The run must succeed, count the
 * derivation once, keep a valid copy, and show that it was built twice: with
 * the same outputs for a deterministic builder, flagged as divergent for a
 * builder that writes random bytes.
 */

/** Short, so the scenario is quick; a healthy worker renews at half of it, so load on 2 cores cannot steal its lock. */
const LOCK_SECONDS = 3;
/** The slow build outlasts the lock loss and the re-run's start, so the stopped worker's build is still going on. */
const SLOW_BUILD_SECONDS = 10;
const WORKERS = ['orion', 'vega'] as const;

export type LostLockBuilder = 'deterministic' | 'random';

export interface LostLockOptions extends ScenarioOptions {
  /** what the slow derivation writes: the same bytes on every machine, or random ones (default deterministic) */
  builder?: LostLockBuilder;
}

export interface LostLockResult {
  outcome: ScenarioOutcome;
  build: CommandResult;
  runId: string;
  runStatus: string;
  /** the run's derivations by status, as `nixfarm runs` shows them */
  counts: Record<string, number>;
  slow: DerivationView;
  /** the worker whose node process was stopped mid-build */
  victim: string;
  /** the worker that re-ran the build */
  survivor: string;
  /** workers whose 'finished' report of the slow derivation reached the stream, in order, with their outcome */
  reports: Array<{ worker: string; outcome: string; attempt: number; jobId: string }>;
  /** how long the victim's node process was stopped, ms */
  pausedMs: number;
}

/** The fixture: `slow` sleeps, then writes its output; `all` depends on it (and, at full size, on a few quick ones). */
function writeFixture(dir: string, builder: LostLockBuilder, quick: number): string {
  writeBusyboxDir(dir);
  // The marker names the running builder in the process table (pgrep), never the CLI, which only carries the salt.
  const write = builder === 'deterministic' ? 'echo slow-$marker > $out' : '${bb}/bin/busybox head -c 64 /dev/urandom > $out';
  const quickNames = Array.from({ length: quick }, (_, i) => `quick-${i}`);
  const text = `{ salt ? "" }:
let
  bb = builtins.path { path = ./busybox; name = "busybox"; };
  mk = { name, script }: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "\${bb}/bin/sh";
    args = [ "-c" script ];
  };
in rec {
  slow = mk { name = "lost-lock-slow"; script = "marker=lost-lock-building-\${salt}; echo $marker; \${bb}/bin/busybox sleep ${SLOW_BUILD_SECONDS}; ${write}"; };
${quickNames.map((q) => `  ${q} = mk { name = "lost-lock-${q}"; script = "echo ${q}-\${salt} > $out"; };`).join('\n')}
  all = mk { name = "lost-lock-all"; script = "echo \${slow} ${quickNames.map((q) => `\${${q}}`).join(' ')} > $out"; };
}
`;
  const file = join(dir, `lost-lock-${builder}.nix`);
  writeFileSync(file, text);
  return file;
}

async function streamEvents(redis: Redis, drvPath: string): Promise<WorkerEvent[]> {
  const entries = (await redis.xrange(redisKeys.workerEvents, '-', '+')) as Array<[string, string[]]>;
  return entries.map(([, fields]) => JSON.parse(fields[1] ?? 'null') as WorkerEvent).filter((e) => e?.drvPath === drvPath);
}

function builderRunning(marker: string): boolean {
  return spawnSync('pgrep', ['-f', marker]).status === 0;
}

/** The pid is the worker's node process itself (the machine wrapper execs it); stopping anything else would test something else. */
function assertWorkerProcess(pid: number | undefined, name: string): number {
  if (pid === undefined) throw new Error(`worker ${name} has no pid`);
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  if (!cmdline.some((a) => a.endsWith('nixfarm.js')) || !cmdline.includes('worker'))
    throw new Error(`pid ${pid} of worker ${name} is ${cmdline.join(' ')}, not the worker's node process`);
  return pid;
}

/** Runs the scenario once and returns the outcome with the facts a test asserts on. */
export async function runLostLock(options: LostLockOptions): Promise<LostLockResult> {
  const builder = options.builder ?? 'deterministic';
  const progress = options.progress ?? (() => undefined);
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-lost-lock-'));
  const file = writeFixture(dir, builder, options.size === 'full' ? 4 : 0);
  const salt = freshSalt();
  const marker = `lost-lock-building-${salt}`;
  const [slowDrv] = await nixInstantiate(file, ['slow'], { salt });
  const farm = await TestFarm.start({
    workers: WORKERS.map((name) => ({ name, maxJobs: 1, lockSeconds: LOCK_SECONDS })),
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  });
  const redis = new Redis(farm.redis.url, { maxRetriesPerRequest: 3 });
  let stoppedPid: number | undefined;
  try {
    const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, file, '-A', 'all', '--argstr', 'salt', salt]);
    const first = await pollFor(
      async () => (await streamEvents(redis, slowDrv!)).find((e) => e.type === 'started'),
      120_000,
      () => 'the slow build to start',
    );
    const victim = first.worker;
    const survivor = WORKERS.find((w) => w !== victim)!;
    // Stop the worker once its builder runs (not during its copy-in, which the node process relays).
    await pollFor(
      async () => (builderRunning(marker) ? true : undefined),
      60_000,
      () => `the builder of the slow derivation on ${victim}`,
    );
    stoppedPid = assertWorkerProcess(farm.workers.get(victim)?.process.pid, victim);
    process.kill(stoppedPid, 'SIGSTOP');
    const stoppedAt = Date.now();
    progress(`stopped ${victim} (pid ${stoppedPid}) mid-build; waiting for ${survivor} to re-run it`);
    const rerun = await pollFor(
      async () => (await streamEvents(redis, slowDrv!)).find((e) => e.type === 'started' && e.worker === survivor),
      60_000,
      () => `${survivor} to re-run the slow derivation after ${victim} lost its lock`,
    );
    // The victim stayed stopped for longer than its lock plus a stalled check: that is how the survivor got the job.
    process.kill(stoppedPid, 'SIGCONT');
    const pausedMs = Date.now() - stoppedAt;
    stoppedPid = undefined;
    const recoveredMs = rerun.at - stoppedAt;
    progress(`${survivor} re-ran it ${recoveredMs} ms after the stop; ${victim} continued after ${pausedMs} ms`);

    const result = await build.result;
    const runId = runIdOf(result.stderr);
    // Both attempts report: the run may end on the first report, the other comes later and must change nothing.
    const reports = await pollFor(
      async () => {
        const finished = (await streamEvents(redis, slowDrv!)).filter((e) => e.type === 'finished');
        return WORKERS.every((w) => finished.some((e) => e.worker === w)) ? finished : undefined;
      },
      90_000,
      () => `reports from both ${victim} and ${survivor}`,
    ).catch(async () => (await streamEvents(redis, slowDrv!)).filter((e) => e.type === 'finished'));
    // The coordinator applies the late report from its stream shortly after it was written.
    await sleep(1500);

    const audit = await auditRun(farm, runId);
    const view = await farm.api<{ status: string; counts: Record<string, number> }>(`/api/runs/${runId}`);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    const slow = derivations.find((d) => d.drvPath === slowDrv)!;
    const lost: string[] = [];
    const countedOnce = Object.keys(view.counts).length === 1 && view.counts.succeeded === audit.derivations;
    if (!countedOnce) lost.push(`run counts ${JSON.stringify(view.counts)}: expected ${audit.derivations} succeeded and nothing else`);
    const notes = [
      `${victim} stopped ${(pausedMs / 1000).toFixed(1)} s mid-build (lock ${LOCK_SECONDS} s); ${survivor} re-ran it`,
      `double builds: ${audit.builtTwice} (different: ${audit.builtTwiceDifferent}); slow derivation: ${slow.attempts ?? '?'} attempts, ${slow.builds ?? 0} successful builds by ${(slow.builtBy ?? []).join(', ') || 'nobody'}`,
      `reports of the slow build: ${reports.map((r) => `${r.worker} ${r.outcome}`).join(', ')}`,
      ...(slow.divergentBuild === undefined ? [] : [`flagged: ${slow.divergentBuild}`]),
    ];
    return {
      outcome: outcomeOf(audit, { problems: lost, recoveredMs, notes }),
      build: result,
      runId,
      runStatus: view.status,
      counts: view.counts,
      slow,
      victim,
      survivor,
      reports: reports.map((r) => ({ worker: r.worker, outcome: r.outcome ?? '?', attempt: r.attempt, jobId: r.jobId })),
      pausedMs,
    };
  } catch (error) {
    process.stderr.write(farm.diagnostics());
    throw error;
  } finally {
    if (stoppedPid !== undefined) process.kill(stoppedPid, 'SIGCONT');
    redis.disconnect();
    await farm.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export const lostLockScenario: ChaosScenario = {
  name: 'lost-lock',
  description: 'a worker stopped mid-build loses its lock, another re-runs the build, then the first reports too: counted once, same outputs, nothing lost',
  // the lock runs out, then two stalled checks and a fetch: about 3 locks; the rest is a margin for a loaded machine
  recoveryBoundSeconds: 30,
  async run(options) {
    return (await runLostLock({ ...options, builder: 'deterministic' })).outcome;
  },
};
