import type { DerivationView } from '@nixfarm/shared';
import { TestFarm } from '../../harness/test-farm.js';
import type { ChaosScenario, ScenarioOptions, ScenarioOutcome } from '../chaos-scenario.js';
import { sleepyDag } from '../chaos-fixtures.js';
import { auditedOutcome, runEnded, startBuild, withFarm } from '../scenario-steps.js';
import { pollFor } from '../../harness/poll.js';

/**
 * --lock-seconds of the scenario's workers. A dead worker's lock lapses within
 * this; BullMQ's stalled check runs as often and frees a job the second time
 * it sees it unlocked: the re-run starts within 3 × lock plus a margin.
 */
const SIGKILL_LOCK_SECONDS = 3;

/**
 * Scenario 1: a worker dies with SIGKILL (its whole machine's processes)
 * while it builds. Nobody tells the farm: its jobs' locks lapse, a stalled
 * check on another worker puts them back, and they are built again
 * elsewhere within three times the lock time plus a margin; the run succeeds.
 */
export const workerSigkillScenario: ChaosScenario = {
  name: 'worker-sigkill',
  description: `a worker SIGKILLed mid-build: its builds re-run on another worker within 3 × lock (${SIGKILL_LOCK_SECONDS} s) + 5 s`,
  recoveryBoundSeconds: 3 * SIGKILL_LOCK_SECONDS + 5,
  run: (options) =>
    withFarm(
      () => startFarm(options),
      (farm) => workerSigkill(farm, options),
    ),
};

function startFarm(options: ScenarioOptions): Promise<TestFarm> {
  return TestFarm.start({
    workers: [
      { name: 'victim', maxJobs: 2, lockSeconds: SIGKILL_LOCK_SECONDS, speedFactor: 2 },
      { name: 'survivor', maxJobs: 2, lockSeconds: SIGKILL_LOCK_SECONDS },
    ],
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  });
}

async function workerSigkill(farm: TestFarm, options: ScenarioOptions): Promise<ScenarioOutcome> {
  const full = options.size === 'full';
  const fixture = sleepyDag({ layers: full ? 4 : 2, width: full ? 4 : 2, sleepSeconds: 4 });
  const build = await startBuild(farm, fixture);
  const rows = async () => (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${build.runId}/derivations`)).derivations;
  // The victim (faster, so preferred) is killed while it runs builds.
  const killed = await pollFor(
    async () => {
      const running = (await rows()).filter((d) => d.status === 'running' && d.worker === 'victim');
      // full size: both of its slots busy, so two builds have to move
      return running.length >= (full ? 2 : 1) ? running : undefined;
    },
    120_000,
    () => `a build on the victim, run ${build.runId}`,
    50,
  );
  const killedAt = Date.now();
  await farm.stopWorker('victim', 'SIGKILL');
  options.progress?.(`victim killed while building ${killed.map((d) => d.name).join(', ')}`);
  // Recovered: every build the victim held started again on the survivor.
  const restarted = await pollFor(
    async () => {
      const now = await rows();
      const again = killed.map((k) =>
        now.find((d) => d.drvPath === k.drvPath && d.worker === 'survivor' && d.startedAt !== undefined && d.startedAt >= killedAt),
      );
      return again.every((d) => d !== undefined) ? again : undefined;
    },
    120_000,
    () => `the victim's builds to start again on the survivor, run ${build.runId}`,
    100,
  );
  const recoveredMs = Math.max(...restarted.map((d) => d!.startedAt! - killedAt));
  const status = await runEnded(farm, build.runId, 300_000);
  const result = await build.result;
  const lost: string[] = [];
  if (status !== 'succeeded' || result.exitCode !== 0) lost.push(`run ended ${status}, nixfarm build exited ${result.exitCode}: ${result.stderr.slice(-1500)}`);
  const final = await rows();
  const attempts = killed.map((k) => final.find((d) => d.drvPath === k.drvPath)?.attempts ?? 0);
  const notes = [`killed builds: ${killed.length}, re-run after ${(recoveredMs / 1000).toFixed(1)} s, attempts ${attempts.join(',')}`];
  const outcome = await auditedOutcome(farm, [build.runId], recoveredMs, notes);
  outcome.lost.unshift(...lost);
  return outcome;
}
