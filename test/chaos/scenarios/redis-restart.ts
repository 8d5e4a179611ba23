import { TestFarm } from '../../harness/test-farm.js';
import type { ChaosScenario, ScenarioOptions, ScenarioOutcome } from '../chaos-scenario.js';
import { sleepyDag } from '../chaos-fixtures.js';
import { auditedOutcome, runEnded, startBuild, succeededAtLeast, succeededCount, withFarm } from '../scenario-steps.js';
import { pollFor, sleep } from '../../harness/poll.js';

/**
 * Scenario 3: Redis (append-only file on) is stopped in the middle of a run
 * and started again on the same port. Nobody is told: the coordinator, the
 * workers and the waiting `nixfarm build` must reconnect by themselves, the
 * builds that ran meanwhile must be reported, and the run must finish.
 */
export const redisRestartScenario: ChaosScenario = {
  name: 'redis-restart',
  description: 'Redis (AOF) restarted mid-run: coordinator, workers and the CLI reconnect by themselves and the run finishes',
  recoveryBoundSeconds: 30,
  run: (options) =>
    withFarm(
      () => startFarm(options),
      (farm) => redisRestart(farm, options),
    ),
};

function startFarm(options: ScenarioOptions): Promise<TestFarm> {
  return TestFarm.start({
    redisAppendOnly: true,
    workers: [
      { name: 'w1', maxJobs: 2, lockSeconds: 10 },
      { name: 'w2', maxJobs: 2, lockSeconds: 10 },
    ],
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  });
}

async function redisRestart(farm: TestFarm, options: ScenarioOptions): Promise<ScenarioOutcome> {
  const full = options.size === 'full';
  const fixture = sleepyDag({ layers: full ? 6 : 4, width: full ? 5 : 3, sleepSeconds: 1.5, withLocalBuilds: true });
  const build = await startBuild(farm, fixture);
  const before = await succeededAtLeast(farm, build.runId, full ? 6 : 3);
  const downMs = full ? 5000 : 2000;
  const stoppedAt = Date.now();
  await farm.redis.stop();
  options.progress?.(`redis stopped after ${before} of ${fixture.derivations} derivations; down for ${downMs / 1000} s`);
  await sleep(downMs);
  await farm.redis.restart();
  const restartedAt = Date.now();
  await pollFor(
    async () => (await succeededCount(farm, build.runId)) > before,
    120_000,
    () => `progress after Redis came back, run ${build.runId}`,
    200,
  );
  const recoveredMs = Date.now() - restartedAt;
  const status = await runEnded(farm, build.runId, full ? 300_000 : 180_000);
  const result = await build.result;
  const lost: string[] = [];
  if (status !== 'succeeded' || result.exitCode !== 0) lost.push(`run ended ${status}, nixfarm build exited ${result.exitCode}: ${result.stderr.slice(-1500)}`);
  const outcome = await auditedOutcome(farm, [build.runId], recoveredMs, [
    `Redis down ${((restartedAt - stoppedAt) / 1000).toFixed(1)} s after ${before}/${fixture.derivations} built`,
  ]);
  outcome.lost.unshift(...lost);
  return outcome;
}
