import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestFarm, sleep } from '../harness/test-farm.js';
import { runIdOf, type BuildRecord } from '../harness/build-timeline.js';
import { chain, freshSalt } from '../harness/nix-fixtures.js';

const LOCK_SECONDS = 3;

describe('a worker lost mid-build', () => {
  let farm: TestFarm;

  before(async () => {
    farm = await TestFarm.start({
      workers: [
        { name: 'kappa', maxJobs: 1, lockSeconds: LOCK_SECONDS },
        { name: 'lambda', maxJobs: 1, lockSeconds: LOCK_SECONDS },
      ],
    });
  });

  after(async () => {
    await farm?.stop();
  });

  it('has its build re-run on another worker within the lock time plus a margin, and the run succeeds', async () => {
    const fixture = chain(1, { sleepSeconds: 6 });
    const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    let victim: string | undefined;
    for (let i = 0; i < 200 && victim === undefined; i++) {
      victim = /building link-0 on (\w+)/.exec(build.stderrSoFar())?.[1];
      if (victim === undefined) await sleep(100);
    }
    assert.ok(victim, `the build started: ${build.stderrSoFar()}`);
    const survivor = victim === 'kappa' ? 'lambda' : 'kappa';
    const killedAt = Date.now();
    await farm.stopWorker(victim, 'SIGKILL');

    const result = await build.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const { derivations } = await farm.api<{ derivations: BuildRecord[] }>(`/api/runs/${runIdOf(result.stderr)}/derivations`);
    const [link] = derivations;
    assert.equal(link?.status, 'succeeded');
    assert.equal(link?.worker, survivor, 'built again on the worker that is still alive');
    assert.equal(link?.attempts, 2, 'one lost attempt, one that finished');
    // A lost lock is noticed after it expires and the next stalled check runs: twice the lock time, plus a margin.
    const restartedAfter = link!.startedAt! - killedAt;
    process.stderr.write(`re-run started ${restartedAfter} ms after the kill (lock ${LOCK_SECONDS} s)\n`);
    assert.ok(restartedAfter < (2 * LOCK_SECONDS + 3) * 1000, `re-run started ${restartedAfter} ms after the kill`);
    const valid = await farm.cli(['runs', runIdOf(result.stderr), '--json']);
    assert.equal(JSON.parse(valid.stdout).status, 'succeeded');
  });
});
