import type { WorkerEvent, DerivationView } from '@nixfarm/shared';
import { TestFarm, type CommandResult } from '../../harness/test-farm.js';
import { runIdOf } from '../../harness/build-timeline.js';
import { freshSalt, layeredDag } from '../../harness/nix-fixtures.js';
import { pollFor } from '../../harness/poll.js';
import { signalWorker, workerExit } from '../../harness/worker-signals.js';
import type { ChaosScenario, ScenarioOptions, ScenarioOutcome } from '../chaos-scenario.js';
import { auditRun, outcomeOf } from '../run-audit.js';
import { eventsOfType, workerEventLog } from '../worker-event-log.js';

/** A short drain: the running builds outlive it, so they are handed back. */
const DRAIN_SECONDS = 1;
const WORKERS = ['w1', 'w2'] as const;

export interface WorkerDrainFacts {
  victim: string;
  exitCode: number | null | 'running';
  /** derivations the victim handed back */
  handedBack: string[];
  /** derivations the victim started after the signal was handled (must be none) */
  startedAfterSignal: string[];
  /** attempts the graph counts for each handed-back derivation once the run ended */
  attemptsOfHandedBack: number[];
  /** hand-backs of the victim that a `finished` report of the victim also covers (must be none) */
  alsoReportedFinished: string[];
  build: CommandResult;
}

/**
 * Scenario 5: a worker is told to stop (SIGTERM to its process group, as a
 * service manager does) while it runs builds, with a drain timeout shorter
 * than they take. It must take no new builds at once, hand its running
 * builds back when the timeout runs out (no `finished` report for them), and
 * exit 0; the other worker builds them, the try is not counted, and the run
 * succeeds with every output valid in the coordinator's store.
 * Recovered: from the signal until every handed-back build started on the
 * other worker (until the worker exited, if nothing had to be handed back).
 */
export const workerDrainScenario: ChaosScenario = {
  name: 'worker-drain',
  description: `SIGTERM to a worker mid-build with --drain-seconds ${DRAIN_SECONDS}: no new builds, running ones handed back and built elsewhere, exit 0`,
  recoveryBoundSeconds: 90,
  run: async (options) => (await runWorkerDrain(options)).outcome,
};

/**
 * How recent both of the victim's starts must be when it is signalled. A
 * build's `started` is sent before its copy-in, the builder then sleeps 3 s
 * (small) or 4 s (full); with the 1 s drain the hand-back comes about 1 s
 * after the signal, so a start at most 1 s old leaves a second or more of margin.
 */
const SIGNAL_WITHIN_MS = 1000;

/**
 * A worker with two builds that it reported `started` (at or after `since`)
 * and has reported nothing else about yet (no `finished`, no `handed-back`):
 * both are in the builder, not copying out or reporting.
 */
function workerBuildingTwo(events: readonly WorkerEvent[], since: number): string | undefined {
  const ended = new Set<string>();
  for (const e of events) if (e.type !== 'started') ended.add(`${e.worker} ${e.jobId} ${e.attempt}`);
  const building = new Map<string, number>();
  for (const s of eventsOfType(events, 'started')) {
    if (s.at < since || ended.has(`${s.worker} ${s.jobId} ${s.attempt}`)) continue;
    building.set(s.worker, (building.get(s.worker) ?? 0) + 1);
  }
  return [...building].find(([, n]) => n >= 2)?.[0];
}

/** The scenario with the facts behind its outcome, for the e2e test's own assertions. */
export async function runWorkerDrain(options: ScenarioOptions): Promise<{ outcome: ScenarioOutcome; facts: WorkerDrainFacts }> {
  const farm = await TestFarm.start({
    workers: WORKERS.map((name) => ({ name, maxJobs: 2, extraArgs: ['--drain-seconds', String(DRAIN_SECONDS)] })),
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  });
  try {
    return await drainOneWorker(farm, options);
  } catch (error) {
    if (error instanceof Error) error.message += `\n${farm.diagnostics()}`;
    throw error;
  } finally {
    await farm.stop();
  }
}

async function drainOneWorker(farm: TestFarm, options: ScenarioOptions): Promise<{ outcome: ScenarioOutcome; facts: WorkerDrainFacts }> {
  const full = options.size === 'full';
  const fixture = layeredDag({ layers: full ? 3 : 2, width: full ? 6 : 3, sleepSeconds: full ? 4 : 3 });
  const build = farm.spawnCli(
    ['build', '--coordinator', farm.address.httpUrl, fixture.file, ...fixture.attrs.flatMap((a) => ['-A', a]), '--argstr', 'salt', freshSalt()],
    {
      timeoutMs: 600_000,
    },
  );
  // The victim: a worker with two builds really in the builder when the signal comes. The API's `running`
  // count is not enough: it still includes a build that finished building and is copying out or reporting,
  // which then completes instead of being handed back. So read the workers' own reports: two `started`
  // with no terminal report yet, both recent enough that the builder still sleeps past the drain timeout.
  const victim = await pollFor(
    async () => workerBuildingTwo(await workerEventLog(farm), Date.now() - SIGNAL_WITHIN_MS),
    120_000,
    () => `a worker with two builds started in the last ${SIGNAL_WITHIN_MS} ms and not yet ended:\n${build.stderrSoFar()}`,
    50,
  );
  const signalAt = Date.now();
  signalWorker(farm, victim, 'SIGTERM');
  options.progress?.(`SIGTERM to ${victim} while 2 builds are in its builder (drain ${DRAIN_SECONDS} s)`);
  const exitCode = await workerExit(farm, victim, 60_000);
  const exitedAt = Date.now();
  const result = await build.result;
  const runId = runIdOf(result.stderr);
  const audit = await auditRun(farm, runId);

  const events = await workerEventLog(farm);
  const handedBack = eventsOfType(events, 'handed-back').filter((e) => e.worker === victim);
  const restarts = handedBack.map((h) => eventsOfType(events, 'started').find((s) => s.drvPath === h.drvPath && s.worker !== victim && s.at >= h.at));
  const recoveredMs =
    handedBack.length === 0 ? exitedAt - signalAt : restarts.every((s) => s !== undefined) ? Math.max(...restarts.map((s) => s!.at)) - signalAt : undefined;
  // A start the worker sent before it handled the signal carries a time just before or at it; a second covers that.
  const startedAfterSignal = eventsOfType(events, 'started')
    .filter((s) => s.worker === victim && s.at > signalAt + 1000)
    .map((s) => s.drvPath);
  const finishedByVictim = new Set(
    eventsOfType(events, 'finished')
      .filter((f) => f.worker === victim)
      .map((f) => f.jobId),
  );
  const alsoReportedFinished = handedBack.filter((h) => finishedByVictim.has(h.jobId)).map((h) => h.drvPath);
  const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
  const attemptsOfHandedBack = handedBack.map((h) => derivations.find((d) => d.drvPath === h.drvPath)?.attempts ?? -1);

  const lost: string[] = [];
  if (result.exitCode !== 0) lost.push(`nixfarm build exited ${result.exitCode}: ${result.stderr.slice(-2000)}`);
  if (exitCode !== 0) lost.push(`the drained worker ${victim} ${exitCode === 'running' ? 'did not exit within 60 s' : `exited with ${exitCode}, not 0`}`);
  if (startedAfterSignal.length > 0) lost.push(`${victim} started builds after SIGTERM: ${startedAfterSignal.join(' ')}`);
  if (alsoReportedFinished.length > 0) lost.push(`${victim} reported handed-back builds finished too: ${alsoReportedFinished.join(' ')}`);
  const facts: WorkerDrainFacts = {
    victim,
    exitCode,
    handedBack: handedBack.map((h) => h.drvPath),
    startedAfterSignal,
    attemptsOfHandedBack,
    alsoReportedFinished,
    build: result,
  };
  return {
    facts,
    outcome: outcomeOf(audit, {
      problems: lost,
      recoveredMs,
      notes: [
        `${victim} exited ${exitCode} ${((exitedAt - signalAt) / 1000).toFixed(1)} s after SIGTERM`,
        `${handedBack.length} build(s) handed back${handedBack.length === 0 ? '' : ` (attempts counted afterwards: ${attemptsOfHandedBack.join(', ')})`}`,
      ],
    }),
  };
}
