import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { DerivationView, WorkerListing } from '@nixfarm/shared';
import { TestFarm } from '../harness/test-farm.js';
import { runIdOf } from '../harness/build-timeline.js';
import { chain, freshSalt, outputPathsOf } from '../harness/nix-fixtures.js';
import { pollFor, sleep } from '../harness/poll.js';
import { signalWorker, workerExit } from '../harness/worker-signals.js';
import { auditRun } from '../chaos/run-audit.js';
import { eventsOfType, workerEventLog } from '../chaos/worker-event-log.js';
import { outcomeProblems } from '../chaos/chaos-scenario.js';
import { runWorkerDrain, workerDrainScenario } from '../chaos/scenarios/worker-drain.js';

async function workers(farm: TestFarm): Promise<WorkerListing[]> {
  const listed = await farm.cli(['workers', '--json']);
  assert.equal(listed.exitCode, 0, listed.stderr);
  return JSON.parse(listed.stdout) as WorkerListing[];
}

async function derivations(farm: TestFarm, runId: string): Promise<DerivationView[]> {
  return (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`)).derivations;
}

/** Starts `nixfarm build` of a fixture's `all` with a fresh salt; the run id once the CLI names it. */
async function startBuild(farm: TestFarm, file: string) {
  const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, file, '-A', 'all', '--argstr', 'salt', freshSalt()], { timeoutMs: 300_000 });
  const runId = await pollFor(
    () => /run (\w+)/.exec(build.stderrSoFar())?.[1],
    60_000,
    () => `the run to be accepted:\n${build.stderrSoFar()}`,
  );
  return { ...build, runId };
}

/** Which worker runs the run's (only) build once it started. */
async function builder(build: { stderrSoFar: () => string }): Promise<string> {
  return pollFor(
    () => /building link-0 on (\w+)/.exec(build.stderrSoFar())?.[1],
    60_000,
    () => `the build to start:\n${build.stderrSoFar()}`,
  );
}

describe('a worker told to stop (SIGTERM) drains', () => {
  let farm: TestFarm | undefined;

  afterEach(async () => {
    await farm?.stop();
    farm = undefined;
  });

  it('takes no new build, finishes the running one within a generous drain timeout, exits 0 and leaves the listing', async () => {
    farm = await TestFarm.start({ workers: [{ name: 'delta', maxJobs: 2, extraArgs: ['--drain-seconds', '300'] }] });
    // Long enough that delta is still draining when `why` asks, even on a loaded machine.
    const first = await startBuild(farm, chain(1, { sleepSeconds: 20 }).file);
    assert.equal(await builder(first), 'delta');

    signalWorker(farm, 'delta', 'SIGTERM');
    // It says so in its heartbeat at once, with a slot still free.
    const draining = await pollFor(
      async () => (await workers(farm!)).find((w) => w.name === 'delta' && w.draining === true),
      10_000,
      () => 'delta to advertise draining',
    );
    assert.equal(draining.running, 1);
    const shown = await farm.cli(['workers']);
    assert.match(shown.stdout, /delta .*DRAINING: takes no new builds/);

    // A second ready derivation after the signal: delta has a free slot but does not take it.
    const second = await startBuild(farm, chain(1).file);
    const [queued] = await pollFor(
      async () => {
        const rows = await derivations(farm!, second.runId);
        return rows.length > 0 && rows.every((r) => r.status === 'queued') ? rows : undefined;
      },
      30_000,
      () => 'the second run to be queued',
    );
    await sleep(3000);
    const [stillQueued] = await derivations(farm, second.runId);
    assert.equal(stillQueued?.status, 'queued', 'a draining worker takes no new build');
    const why = await farm.cli(['why', queued!.drvPath]);
    assert.equal(why.exitCode, 0, why.stderr);
    assert.match(why.stdout, /delta\s+draining\s+draining: it is leaving and takes no new builds/);
    assert.match(why.stdout, /no capable live worker takes new builds now/);

    // The running build ends as usual, reported by delta, and delta exits 0.
    assert.equal(await workerExit(farm, 'delta', 120_000), 0, farm.tail('delta'));
    assert.match(farm.tail('delta', 400), /draining: taking no new builds; waiting for 1 running build\(s\) until \S+ \(--drain-seconds 300\)/);
    assert.match(farm.tail('delta', 400), /the 1 running build\(s\) ended; stopped/);
    const done = await first.result;
    assert.equal(done.exitCode, 0, done.stderr);
    const [built] = await derivations(farm, first.runId);
    assert.equal(built?.status, 'succeeded');
    assert.equal(built?.worker, 'delta');
    assert.equal(built?.attempts, 1);
    assert.deepEqual(
      (await workers(farm)).map((w) => w.name),
      [],
      'a drained worker leaves the listing at once',
    );

    // The second derivation waited for a worker that takes builds.
    await farm.startWorker({ name: 'epsilon' });
    await farm.waitForWorkers(['epsilon']);
    const secondDone = await second.result;
    assert.equal(secondDone.exitCode, 0, secondDone.stderr);
    const [later] = await derivations(farm, second.runId);
    assert.equal(later?.worker, 'epsilon');
    assert.equal(later?.attempts, 1);
    const starts = eventsOfType(await workerEventLog(farm), 'started');
    assert.deepEqual(
      starts.filter((s) => s.drvPath === later!.drvPath).map((s) => s.worker),
      ['epsilon'],
      'delta never started the second derivation',
    );
  });

  it('hands a long build back when the drain timeout runs out: another worker builds it, the try is not counted, exit 0', async () => {
    farm = await TestFarm.start({
      workers: [
        { name: 'kappa', extraArgs: ['--drain-seconds', '1'] },
        { name: 'lambda', extraArgs: ['--drain-seconds', '1'] },
      ],
    });
    const run = await startBuild(farm, chain(1, { sleepSeconds: 20 }).file);
    const victim = await builder(run);
    const survivor = victim === 'kappa' ? 'lambda' : 'kappa';
    await sleep(1000); // well into the build
    const signalAt = Date.now();
    signalWorker(farm, victim, 'SIGTERM');
    assert.equal(await workerExit(farm, victim, 60_000), 0, farm.tail(victim));
    const exitedAfter = Date.now() - signalAt;
    assert.ok(exitedAfter < 30_000, `exited ${exitedAfter} ms after SIGTERM with a drain timeout of 1 s`);
    assert.match(farm.tail(victim, 400), /handed 1 build\(s\) back to the queue \(drain timeout ran out\); stopped/);

    const result = await run.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    assert.match(
      result.stderr,
      new RegExp(`link-0 handed back by ${victim} \\(worker ${victim} is leaving and its drain timeout of 1 s ran out\\); queued again`),
    );
    const [link] = await derivations(farm, runIdOf(result.stderr));
    assert.equal(link?.status, 'succeeded');
    assert.equal(link?.worker, survivor);
    assert.equal(link?.attempts, 1, 'the handed-back try is not counted: one attempt, the one that finished');

    // The events: the victim handed it back and never reported it finished; the survivor started it after that.
    const events = await workerEventLog(farm);
    const handedBack = eventsOfType(events, 'handed-back');
    assert.deepEqual(
      handedBack.map((h) => [h.worker, h.drvPath]),
      [[victim, link!.drvPath]],
    );
    assert.deepEqual(
      eventsOfType(events, 'finished').map((f) => [f.worker, f.outcome]),
      [[survivor, 'succeeded']],
    );
    const restart = eventsOfType(events, 'started').find((s) => s.worker === survivor);
    assert.ok(restart !== undefined && restart.at >= handedBack[0]!.at);
    assert.equal(restart.jobId, handedBack[0]!.jobId, 'the same BullMQ job went back to the queue');

    // Nothing half-made anywhere: the victim's store holds no valid output of it, the coordinator's holds the survivor's, intact.
    const outputs = await outputPathsOf(link!.drvPath);
    assert.deepEqual([...(await farm.workers.get(victim)!.machine.isValid(outputs))], [], 'the interrupted build left no valid output on the victim');
    const audit = await auditRun(farm, runIdOf(result.stderr));
    assert.deepEqual(audit.lost, []);
    assert.equal(audit.builtTwice, 0);
  });

  it('hands running builds back at once on a second SIGTERM', async () => {
    farm = await TestFarm.start({
      workers: [
        { name: 'mu', extraArgs: ['--drain-seconds', '600'] },
        { name: 'nu', extraArgs: ['--drain-seconds', '600'] },
      ],
    });
    const run = await startBuild(farm, chain(1, { sleepSeconds: 20 }).file);
    const victim = await builder(run);
    const survivor = victim === 'mu' ? 'nu' : 'mu';
    signalWorker(farm, victim, 'SIGTERM');
    await pollFor(
      async () => (await workers(farm!)).find((w) => w.name === victim && w.draining === true),
      10_000,
      () => `${victim} to advertise draining`,
    );
    // The first signal alone does not stop the build (its drain timeout is 10 minutes).
    await sleep(2000);
    const [during] = await derivations(farm, run.runId);
    assert.equal(during?.status, 'running');
    assert.equal(during?.worker, victim);

    const againAt = Date.now();
    signalWorker(farm, victim, 'SIGTERM');
    assert.equal(await workerExit(farm, victim, 60_000), 0, farm.tail(victim));
    const exitedAfter = Date.now() - againAt;
    assert.ok(exitedAfter < 20_000, `exited ${exitedAfter} ms after the second SIGTERM`);
    assert.match(farm.tail(victim, 400), /SIGTERM again: handing running builds back now/);
    assert.match(farm.tail(victim, 400), /handed 1 build\(s\) back to the queue \(told to leave now\); stopped/);

    const result = await run.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const [link] = await derivations(farm, run.runId);
    assert.equal(link?.status, 'succeeded');
    assert.equal(link?.worker, survivor);
    assert.equal(link?.attempts, 1);
    const restart = eventsOfType(await workerEventLog(farm), 'started').find((s) => s.worker === survivor);
    assert.ok(
      restart !== undefined && restart.at - againAt < 15_000,
      `the survivor started it ${restart === undefined ? 'never' : `${restart.at - againAt} ms`} after the second signal`,
    );
  });

  it('chaos scenario worker-drain (small): nothing lost, the handed-back builds counted once', async () => {
    const { outcome, facts } = await runWorkerDrain({ size: 'small' });
    process.stderr.write(`worker-drain: ${JSON.stringify({ ...outcome, facts: { ...facts, build: undefined } })}\n`);
    assert.deepEqual(outcomeProblems(workerDrainScenario, outcome), []);
    assert.equal(facts.exitCode, 0);
    assert.equal(facts.handedBack.length, 2, 'both running builds were handed back (each sleeps longer than the drain timeout)');
    assert.deepEqual(facts.attemptsOfHandedBack, [1, 1]);
    assert.deepEqual(facts.startedAfterSignal, []);
    assert.deepEqual(facts.alsoReportedFinished, []);
    assert.equal(outcome.builtTwice, 0);
  });
});
