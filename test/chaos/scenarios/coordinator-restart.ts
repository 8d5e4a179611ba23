import type { DerivationView } from '@nixfarm/shared';
import { TestFarm } from '../../harness/test-farm.js';
import type { ChaosScenario, ScenarioOptions, ScenarioOutcome } from '../chaos-scenario.js';
import { sleepyDag } from '../chaos-fixtures.js';
import { auditedOutcome, runEnded, startBuild, succeededCount, withFarm } from '../scenario-steps.js';
import { pollFor, sleep } from '../../harness/poll.js';

/**
 * Scenario 4: the coordinator dies (SIGKILL of its whole process group:
 * HTTP API, SSH store endpoint, local builds) in the middle of a run and is
 * started again on the same ports. Workers keep building meanwhile; their
 * reports wait in Redis; copies that hit the dead endpoint are retried. The
 * restarted coordinator resumes the run from Redis, local builds that died
 * with it are built again, the waiting `nixfarm build` reconnects and exits 0,
 * and `nixfarm wait RUN` follows the same run from a new process.
 */
export const coordinatorRestartScenario: ChaosScenario = {
  name: 'coordinator-restart',
  description: 'coordinator SIGKILLed mid-run, restarted after a pause: the run resumes from Redis, `nixfarm build` reconnects, `nixfarm wait` follows it',
  recoveryBoundSeconds: 60,
  run: (options) =>
    withFarm(
      () => startFarm(options),
      (farm) => coordinatorRestart(farm, options),
    ),
};

function startFarm(options: ScenarioOptions): Promise<TestFarm> {
  return TestFarm.start({
    workers: [
      { name: 'w1', maxJobs: 2, lockSeconds: 5 },
      { name: 'w2', maxJobs: 2, lockSeconds: 5 },
    ],
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  });
}

async function coordinatorRestart(farm: TestFarm, options: ScenarioOptions): Promise<ScenarioOutcome> {
  const full = options.size === 'full';
  const fixture = sleepyDag({ layers: full ? 6 : 4, width: full ? 5 : 3, sleepSeconds: 1.5, withLocalBuilds: true });
  const build = await startBuild(farm, fixture);
  // Kill it while it runs a local build and workers run theirs: both must survive.
  const atKill = await pollFor(
    async () => {
      const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${build.runId}/derivations`);
      const local = derivations.find((d) => d.status === 'running' && d.worker === 'coordinator');
      return local === undefined ? undefined : { local: local.name, done: derivations.filter((d) => d.status === 'succeeded').length };
    },
    120_000,
    () => `a local build of run ${build.runId}`,
    50,
  );
  const before = atKill.done;
  const killedAt = Date.now();
  await farm.killCoordinator('SIGKILL');
  options.progress?.(
    `coordinator killed during local build ${atKill.local}, after ${before} of ${fixture.derivations} derivations; down for ${full ? 5 : 2} s`,
  );
  await sleep(full ? 5000 : 2000);
  await farm.restartCoordinator();
  const restartedAt = Date.now();
  // Recovered: a derivation succeeded that had not before the kill.
  await pollFor(
    async () => (await succeededCount(farm, build.runId)) > before,
    120_000,
    () => `progress after the restart of run ${build.runId}`,
    200,
  );
  const recoveredMs = Date.now() - killedAt;
  const notes = [
    `coordinator down ${((restartedAt - killedAt) / 1000).toFixed(1)} s`,
    `killed after ${before}/${fixture.derivations} built, during local build ${atKill.local}`,
  ];

  const lost: string[] = [];
  // Bounded: a run that never ends fails here, naming it, rather than at the CLI's own timeout.
  await runEnded(farm, build.runId, full ? 300_000 : 180_000);
  const result = await build.result;
  if (result.exitCode !== 0) lost.push(`nixfarm build exited ${result.exitCode} after the restart: ${result.stderr.slice(-2000)}`);
  if (!/reconnecting/.test(result.stderr)) notes.push('nixfarm build did not have to reconnect');
  const waited = await farm.cli(['wait', build.runId, '--coordinator', farm.address.httpUrl]);
  if (waited.exitCode !== 0) lost.push(`nixfarm wait ${build.runId} exited ${waited.exitCode}: ${waited.stderr.slice(-2000)}`);
  else if (waited.stdout !== result.stdout) lost.push(`nixfarm wait printed ${JSON.stringify(waited.stdout)}, nixfarm build ${JSON.stringify(result.stdout)}`);
  const local = result.stderr.match(/built n-\d+-0 on coordinator/g)?.length ?? 0;
  notes.push(`${local} local build(s) on the coordinator`);
  const outcome = await auditedOutcome(farm, [build.runId], recoveredMs, notes);
  outcome.lost.unshift(...lost);
  return outcome;
}
