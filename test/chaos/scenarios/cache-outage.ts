import type { UploadRecord } from '@nixfarm/shared';
import { TestFarm } from '../../harness/test-farm.js';
import { HttpCacheServer } from '../../harness/http-cache-server.js';
import { pollFor, sleep } from '../../harness/poll.js';
import type { ChaosScenario, ScenarioOptions, ScenarioOutcome } from '../chaos-scenario.js';
import { sleepyDag, type ChaosFixture } from '../chaos-fixtures.js';
import { auditedOutcome, runEnded, startBuild, withFarm } from '../scenario-steps.js';

/**
 * Scenario 8: the external cache of --push-to goes down while a run builds and
 * its uploads come due, and comes back later. Builds must not wait on it (the
 * run takes as long as the same run with the cache up), the uploads retry with
 * back-off, and in the end every path of every run's closure is on the cache,
 * each narinfo put exactly once.
 */
export const cacheOutageScenario: ChaosScenario = {
  name: 'cache-outage',
  description: 'the --push-to HTTP cache is down mid-run, then back: the run is not slowed, every path is uploaded exactly once',
  recoveryBoundSeconds: 60,
  run: async (options) => {
    const cache = await HttpCacheServer.start();
    try {
      return await withFarm(
        () => startFarm(cache, options),
        (farm) => cacheOutage(farm, cache, options),
      );
    } finally {
      await cache.down();
    }
  },
};

function startFarm(cache: HttpCacheServer, options: ScenarioOptions): Promise<TestFarm> {
  return TestFarm.start({
    workers: [{ name: 'w1', maxJobs: 2 }],
    coordinatorArgs: ['--push-to', cache.url],
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  });
}

async function uploadsOf(farm: TestFarm, runId: string): Promise<UploadRecord[]> {
  return (await farm.api<{ uploads: UploadRecord[] }>(`/api/runs/${runId}/uploads`)).uploads;
}

/** Builds the fixture with a fresh salt; returns the run and how long it took from submission to its end. */
async function timedRun(farm: TestFarm, fixture: ChaosFixture): Promise<{ runId: string; ms: number; status: string }> {
  const started = Date.now();
  const build = await startBuild(farm, fixture);
  const status = await runEnded(farm, build.runId, 300_000);
  const ms = Date.now() - started;
  await build.result;
  return { runId: build.runId, ms, status };
}

async function cacheOutage(farm: TestFarm, cache: HttpCacheServer, options: ScenarioOptions): Promise<ScenarioOutcome> {
  const full = options.size === 'full';
  const fixture = sleepyDag({ layers: full ? 5 : 3, width: full ? 4 : 2, sleepSeconds: 1 });
  const lost: string[] = [];
  // With the cache up: the run's time, and its uploads done.
  const up = await timedRun(farm, fixture);
  await pollFor(
    async () => (await uploadsOf(farm, up.runId)).every((u) => u.state === 'uploaded') || undefined,
    60_000,
    () => `run ${up.runId}'s uploads`,
  );
  await cache.down();
  const downAt = Date.now();
  options.progress?.(`cache down after run ${up.runId} (${up.ms} ms) was uploaded`);
  const down = await timedRun(farm, fixture);
  const retrying = await pollFor(
    async () => (await uploadsOf(farm, down.runId)).find((u) => u.state === 'retrying'),
    60_000,
    () => `run ${down.runId}'s upload retrying while the cache is down`,
  );
  await sleep(Math.max(0, (full ? 8000 : 3000) - (Date.now() - downAt)));
  await cache.up();
  const upAt = Date.now();
  options.progress?.(`cache back after ${((upAt - downAt) / 1000).toFixed(1)} s; run ${down.runId} took ${down.ms} ms`);
  const done = await pollFor(
    async () => {
      const uploads = await uploadsOf(farm, down.runId);
      return uploads.length > 0 && uploads.every((u) => u.state === 'uploaded') && uploads;
    },
    120_000,
    () => `run ${down.runId}'s uploads after the cache came back`,
    200,
  ).catch(() => undefined);
  const recoveredMs = done === undefined ? undefined : Date.now() - upAt;
  for (const run of [up, down]) if (run.status !== 'succeeded') lost.push(`run ${run.runId} ended ${run.status}`);
  // Each run uploads the closure of `all`: every derivation's output, each narinfo put once.
  const narinfos = cache.narinfoPuts();
  if (narinfos.size !== 2 * fixture.derivations) lost.push(`${narinfos.size} narinfos on the cache, ${2 * fixture.derivations} expected`);
  for (const [hash, puts] of narinfos) if (puts !== 1) lost.push(`${hash}.narinfo put ${puts} times`);
  // Not slowed: the same DAG with the cache down takes about as long as with it up.
  if (down.ms > up.ms * 1.5 + 2000) lost.push(`the run took ${down.ms} ms with the cache down, ${up.ms} ms with it up`);
  const outcome = await auditedOutcome(farm, [up.runId, down.runId], recoveredMs, [
    `runs ${up.ms} ms (cache up) and ${down.ms} ms (cache down)`,
    `upload attempts while down: ${retrying.attempts}+, after: ${done?.map((u) => u.attempts).join(',') ?? '?'}`,
  ]);
  outcome.lost.unshift(...lost);
  return outcome;
}
