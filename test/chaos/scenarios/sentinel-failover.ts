import { readFileSync } from 'node:fs';
import { TestFarm } from '../../harness/test-farm.js';
import { SentinelRedis } from '../../harness/sentinel-redis.js';
import type { ChaosScenario, ScenarioOptions, ScenarioOutcome } from '../chaos-scenario.js';
import { sleepyDag } from '../chaos-fixtures.js';
import { auditedOutcome, runEnded, startBuild, succeededAtLeast, succeededCount, withFarm } from '../scenario-steps.js';
import { pollFor } from '../../harness/poll.js';

/** The watchdog bound the scenario's workers run with: short, so a stall after the failover shows within the run. */
const WATCHDOG_SECONDS = 5;

/**
 * Scenario 9: Redis behind Sentinel (a primary, a replica, three sentinels,
 * quorum 2), the farm connected through the sentinels; the primary is
 * SIGKILLed mid-run. The sentinels promote the replica; the coordinator, the
 * workers and their BullMQ connections must follow it by themselves. Then
 * every worker's fetch connection is frozen (clients reach the promoted
 * replica through a relay): the stall BullMQ users report after failovers,
 * forced, for the watchdogs to find. The run must finish with nothing lost.
 * Replication is asynchronous: writes the primary acknowledged but had not
 * sent are lost with it (a queued job, a report); the coordinator's periodic
 * reconcile queues a lost job again, and a build whose report was lost is
 * built again from its returned job (the same result). The watchdogs'
 * restarts, by themselves and forced, are counted from the workers' logs.
 */
export const sentinelFailoverScenario: ChaosScenario = {
  name: 'sentinel-failover',
  description: 'Redis primary SIGKILLed mid-run behind three sentinels: the replica is promoted, everyone follows it, the run finishes',
  // failover (1 s to be judged down, then the election) plus, at worst, one periodic reconcile (60 s) for a job lost with the primary
  recoveryBoundSeconds: 90,
  run: (options) =>
    withFarm(
      () => startFarm(options),
      (farm) => failover(farm, options),
    ),
};

function startFarm(options: ScenarioOptions): Promise<TestFarm> {
  const watchdog = ['--fetch-watchdog-seconds', String(WATCHDOG_SECONDS)];
  return TestFarm.start({
    redis: () => SentinelRedis.start({ downAfterMs: 1000, replicaBehindProxy: true }),
    workers: [
      { name: 'w1', maxJobs: 2, lockSeconds: 10, extraArgs: watchdog },
      { name: 'w2', maxJobs: 2, lockSeconds: 10, extraArgs: watchdog },
    ],
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  });
}

async function failover(farm: TestFarm, options: ScenarioOptions): Promise<ScenarioOutcome> {
  const sentinel = farm.redis as SentinelRedis;
  const full = options.size === 'full';
  const fixture = sleepyDag({ layers: full ? 6 : 4, width: full ? 5 : 3, sleepSeconds: 1.5, withLocalBuilds: true });
  const build = await startBuild(farm, fixture);
  const before = await succeededAtLeast(farm, build.runId, full ? 6 : 3);
  const primary = await sentinel.masterAddress();
  const killedAt = Date.now();
  sentinel.killPrimary();
  options.progress?.(`primary ${primary.host}:${primary.port} SIGKILLed after ${before} of ${fixture.derivations} derivations`);
  const promoted = await pollFor(
    async () => {
      const now = await sentinel.masterAddress();
      return now.port !== primary.port ? now : undefined;
    },
    60_000,
    () => `the sentinels to promote a replica (primary was ${primary.host}:${primary.port})`,
    200,
  );
  const promotedAt = Date.now();
  options.progress?.(`replica ${promoted.host}:${promoted.port} promoted after ${((promotedAt - killedAt) / 1000).toFixed(1)} s`);
  // The API reads through the coordinator's own Redis connection: an answer with more succeeded is the farm working on the new primary.
  await pollFor(
    async () => ((await succeededCount(farm, build.runId).catch(() => 0)) > before ? true : undefined),
    120_000,
    () => `progress after the failover, run ${build.runId}`,
    200,
  );
  const recoveredMs = Date.now() - killedAt;
  // No stall came by itself in our runs (ioredis's failover detector moves every connection): make the one BullMQ users
  // report, a fetch connection left silent with its socket open, on every worker at once, and let the watchdogs find it.
  const frozen = ['w1', 'w2'].map((w) => sentinel.replicaLink!.freezeOpen(`nixfarm-fetch-${w}`)).reduce((a, b) => a + b, 0);
  const frozenAt = Date.now();
  const doneAtFreeze = await succeededCount(farm, build.runId);
  const status = await runEnded(farm, build.runId, full ? 300_000 : 180_000);
  const result = await build.result;
  const lost: string[] = [];
  const problems: string[] = [];
  if (promoted.port !== sentinel.replicaAnnouncedPort)
    problems.push(`the sentinels named ${promoted.host}:${promoted.port}, not the replica ${sentinel.replicaAnnouncedPort}`);
  if (status !== 'succeeded' || result.exitCode !== 0) lost.push(`run ended ${status}, nixfarm build exited ${result.exitCode}: ${result.stderr.slice(-1500)}`);
  const stalls = [...farm.workers.values()].flatMap((w) =>
    readFileSync(w.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('fetch loop stalled'))
      .map((l) => JSON.parse(l) as { time: number }),
  );
  const forced = stalls.filter((s) => s.time >= frozenAt).length;
  if (frozen > 0 && doneAtFreeze < fixture.derivations && forced === 0)
    problems.push(`${frozen} fetch connection(s) frozen with work left, and no watchdog restarted a fetch loop`);
  const outcome = await auditedOutcome(farm, [build.runId], recoveredMs, [
    `primary killed after ${before}/${fixture.derivations} built; replica promoted in ${((promotedAt - killedAt) / 1000).toFixed(1)} s`,
    `fetch watchdog restarts (from worker logs, bound ${WATCHDOG_SECONDS} s): ${stalls.length - forced} by themselves after the failover; ${forced} after ${frozen} fetch connection(s) were frozen at ${doneAtFreeze}/${fixture.derivations} built`,
  ]);
  outcome.lost.unshift(...problems, ...lost);
  return outcome;
}
