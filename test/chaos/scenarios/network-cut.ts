import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { assertStorePath, parseDerivation, type DerivationView } from '@nixfarm/shared';
import { TestFarm } from '../../harness/test-farm.js';
import { freshSalt, nixInstantiate, outputsOf } from '../../harness/nix-fixtures.js';
import type { SimulatedMachine } from '../../harness/simulated-machine.js';
import type { ChaosScenario, ScenarioOptions, ScenarioOutcome } from '../chaos-scenario.js';
import { bulkyCopies, type ChaosFixture } from '../chaos-fixtures.js';
import { auditedOutcome, runEnded, startBuild, withFarm } from '../scenario-steps.js';
import { pollFor } from '../../harness/poll.js';

const MiB = 1024 * 1024;

/**
 * Scenario 2: the network between a worker and the coordinator's store dies
 * in the middle of a copy, once while a large input is copied in and once
 * while a large output is copied out. Each worker reaches the SSH endpoint
 * through a TCP relay that the scenario cuts once a few MiB of the copy went
 * through (SSH is encrypted: the volume tells the copy from chatter). The
 * attempt is reported aborted, retried with back-off, and the run succeeds;
 * the path whose copy was cut is not valid in the receiving store right after
 * the cut, and every valid path there matches the hash Nix recorded for it.
 */
export const networkCutScenario: ChaosScenario = {
  name: 'network-cut',
  description: "a worker's link to the coordinator cut mid copy-in and mid copy-out: retried with back-off, no partial path valid",
  recoveryBoundSeconds: 30,
  run: (options) =>
    withFarm(
      () => startFarm(options),
      (farm) => networkCut(farm, options),
    ),
};

function startFarm(options: ScenarioOptions): Promise<TestFarm> {
  return TestFarm.start({
    workers: [
      { name: 'w1', maxJobs: 1, viaProxy: true },
      { name: 'w2', maxJobs: 1, viaProxy: true },
    ],
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  });
}

interface CutCopy {
  runId: string;
  recoveredMs: number;
  notes: string[];
  lost: string[];
}

async function networkCut(farm: TestFarm, options: ScenarioOptions): Promise<ScenarioOutcome> {
  const sizeMiB = options.size === 'full' ? 64 : 24;
  const fixtures = bulkyCopies(sizeMiB);
  const copyIn = await cutDuring(farm, fixtures.copyIn, 'down', sizeMiB, options);
  const copyOut = await cutDuring(farm, fixtures.copyOut, 'up', sizeMiB, options);
  const outcome = await auditedOutcome(farm, [copyIn.runId, copyOut.runId], Math.max(copyIn.recoveredMs, copyOut.recoveredMs), [
    ...copyIn.notes,
    ...copyOut.notes,
  ]);
  outcome.lost.unshift(...copyIn.lost, ...copyOut.lost);
  // No store may hold a path whose contents differ from what Nix registered (a half-written import).
  for (const [name, w] of farm.workers) {
    const verified = await w.machine.run('nix-store', ['--verify', '--check-contents']);
    if (verified.exitCode !== 0 || /modified|corrupt/i.test(verified.stderr))
      outcome.lost.push(`worker ${name}'s store fails nix-store --verify --check-contents: ${verified.stderr.trim()}`);
  }
  return outcome;
}

/** Builds the fixture and cuts the first link that carries `sizeMiB / 4` MiB in `direction` (down: copy-in, up: copy-out). */
async function cutDuring(farm: TestFarm, fixture: ChaosFixture, direction: 'up' | 'down', sizeMiB: number, options: ScenarioOptions): Promise<CutCopy> {
  const phase = direction === 'down' ? 'copy-in' : 'copy-out';
  const links = [...farm.workers.entries()].map(([name, w]) => ({ name, link: w.link!, machine: w.machine }));
  const cut = Promise.race(links.map(({ name, link }) => link.cutWhen({ direction, bytes: Math.floor((sizeMiB / 4) * MiB) }).then((at) => ({ name, at }))));
  // The path whose copy is cut: the large input (copy-in) or the large output (copy-out).
  const salt = freshSalt();
  const [drvPath] = await nixInstantiate(fixture.file, [fixture.attr], { salt });
  const copied = direction === 'down' ? bulkyInput(drvPath!) : Object.values(await outputsOf(drvPath!))[0]!;

  const build = await startBuild(farm, fixture, { salt });
  const { name: victim, at: cutAt } = await pollFor(
    () => Promise.race([cut, new Promise<undefined>((r) => setTimeout(() => r(undefined), 200))]),
    120_000,
    () => `a ${phase} to cut`,
  );
  for (const { link } of links) link.disarm();
  // Right after the cut, the path being copied must not be valid where it was going (the retry waits a back-off first).
  const receiver = direction === 'down' ? farm.workers.get(victim)!.machine : undefined;
  const validAfterCut = await isValid(copied, receiver);
  options.progress?.(`${phase}: cut ${victim}'s link; ${copied} ${validAfterCut ? 'IS' : 'is not'} valid in the receiving store right after`);
  const status = await runEnded(farm, build.runId, 180_000);
  const recoveredMs = Date.now() - cutAt;
  const result = await build.result;
  const lost: string[] = [];
  if (validAfterCut) lost.push(`${copied} became valid in the receiving store of a cut ${phase}`);
  if (status !== 'succeeded' || result.exitCode !== 0)
    lost.push(`the ${phase} run ended ${status}, nixfarm build exited ${result.exitCode}: ${result.stderr.slice(-1500)}`);
  const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${build.runId}/derivations`);
  const attempts = derivations[0]?.attempts ?? 0;
  if (attempts < 2) lost.push(`the ${phase} derivation ran ${attempts} time(s): the cut should have cost one attempt`);
  return {
    runId: build.runId,
    recoveredMs,
    lost,
    notes: [`${phase} cut on ${victim}, ${attempts} attempts, done ${(recoveredMs / 1000).toFixed(1)} s after the cut`],
  };
}

/** The large source the copy-in fixture reads: the derivation's only input source besides busybox. */
function bulkyInput(drvPath: string): string {
  const drv = parseDerivation(drvPath, readFileSync(drvPath, 'utf8'));
  const blob = drv.inputSrcs.find((p) => p.endsWith('-chaos-blob'));
  if (blob === undefined) throw new Error(`${drvPath} has no chaos-blob input: ${drv.inputSrcs.join(' ')}`);
  return assertStorePath(blob);
}

async function isValid(path: string, machine: SimulatedMachine | undefined): Promise<boolean> {
  if (machine !== undefined) return (await machine.run('nix-store', ['--check-validity', path])).exitCode === 0;
  return new Promise((resolve) => execFile('nix-store', ['--check-validity', path], (error) => resolve(error === null)));
}
