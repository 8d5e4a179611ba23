import type { TestFarm, CommandResult } from '../harness/test-farm.js';
import { pollFor } from '../harness/poll.js';
import { auditRun, outcomeOf } from './run-audit.js';
import type { ChaosFixture } from './chaos-fixtures.js';
import type { ScenarioOutcome } from './chaos-scenario.js';
import { freshSalt } from '../harness/nix-fixtures.js';

/** Steps the scenarios share: start a build through the real CLI, watch its progress, audit it. */
export interface StartedBuild {
  runId: string;
  /** the `nixfarm build` process's end */
  result: Promise<CommandResult>;
  stderrSoFar: () => string;
}

/** Starts `nixfarm build` of the fixture with a fresh salt (or the one given, to know its paths beforehand). */
export async function startBuild(farm: TestFarm, fixture: ChaosFixture, options: { timeoutMs?: number; salt?: string } = {}): Promise<StartedBuild> {
  const salt = options.salt ?? freshSalt();
  const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, fixture.file, '-A', fixture.attr, '--argstr', 'salt', salt], {
    timeoutMs: options.timeoutMs ?? 600_000,
  });
  const runId = await pollFor(
    () => /nixfarm: run (\w+):/.exec(build.stderrSoFar())?.[1],
    120_000,
    () => `the build to be accepted:\n${build.stderrSoFar()}`,
  );
  return { runId, result: build.result, stderrSoFar: build.stderrSoFar };
}

/** How many of a run's derivations succeeded so far (the API's counts). */
export async function succeededCount(farm: TestFarm, runId: string): Promise<number> {
  const run = await farm.api<{ counts: Record<string, number> }>(`/api/runs/${runId}`);
  return run.counts.succeeded ?? 0;
}

/** Waits until at least `atLeast` of a run's derivations succeeded (the moment to inject a fault); returns how many had. */
export async function succeededAtLeast(farm: TestFarm, runId: string, atLeast: number): Promise<number> {
  return pollFor(
    async () => {
      const done = await succeededCount(farm, runId);
      return done >= atLeast ? done : undefined;
    },
    120_000,
    () => `the first builds of run ${runId}`,
  );
}

/** The run's end as the API tells it, once it is not running any more. */
export async function runEnded(farm: TestFarm, runId: string, timeoutMs: number): Promise<string> {
  return pollFor(
    async () => {
      const run = await farm.api<{ status: string }>(`/api/runs/${runId}`);
      return run.status === 'running' ? undefined : run.status;
    },
    timeoutMs,
    () => `run ${runId} to end`,
    250,
  );
}

/** Audits every run of a scenario into one outcome. */
export async function auditedOutcome(farm: TestFarm, runIds: readonly string[], recoveredMs: number | undefined, notes: string[]): Promise<ScenarioOutcome> {
  const outcome: ScenarioOutcome = { derivations: 0, lost: [], builtTwice: 0, builtTwiceDifferent: 0, recoveredMs, notes };
  for (const runId of runIds) {
    const one = outcomeOf(await auditRun(farm, runId), { recoveredMs, notes });
    outcome.derivations += one.derivations;
    outcome.lost.push(...one.lost);
    outcome.builtTwice += one.builtTwice;
    outcome.builtTwiceDifferent += one.builtTwiceDifferent;
  }
  return outcome;
}

/** Runs a scenario body on a fresh farm and always tears the farm down; the farm's logs go with a failure. */
export async function withFarm<T>(start: () => Promise<TestFarm>, body: (farm: TestFarm) => Promise<T>): Promise<T> {
  const farm = await start();
  try {
    return await body(farm);
  } catch (error) {
    if (error instanceof Error) error.message += `\n${farm.diagnostics()}`;
    throw error;
  } finally {
    await farm.stop();
  }
}
