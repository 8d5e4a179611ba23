import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { outcomeProblems } from '../chaos/chaos-scenario.js';
import { lostLockScenario, runLostLock } from '../chaos/scenarios/lost-lock.js';

/**
 * Scenario 6 at small size, on a real farm: a worker whose node process is
 * stopped mid-build loses its job's lock, the other worker re-runs the same
 * job, then the first one wakes up, finishes and reports as well.
 */
describe('scenario 6: a build re-run after a lost lock', () => {
  it('counts the derivation once, keeps a valid copy, and shows it built twice with the same outputs', async () => {
    const r = await runLostLock({ size: 'small' });
    const { outcome, slow } = r;
    process.stderr.write(`lost-lock: ${outcome.notes.join(' | ')}; recovered in ${outcome.recoveredMs} ms\n`);
    assert.deepEqual(outcomeProblems(lostLockScenario, outcome), [], outcome.notes.join('\n'));
    assert.equal(r.build.exitCode, 0, r.build.stderr);
    assert.equal(r.runStatus, 'succeeded');
    assert.deepEqual(r.counts, { succeeded: outcome.derivations }, 'every derivation counted once, as succeeded');
    assert.equal(outcome.derivations, 2);
    assert.equal(outcome.builtTwice, 1, 'the slow derivation was reported built by both workers');
    assert.equal(outcome.builtTwiceDifferent, 0, 'a deterministic builder gives the same NAR hashes');
    assert.deepEqual(
      r.reports.map((x) => x.outcome),
      ['succeeded', 'succeeded'],
      `both attempts finished and reported success: ${JSON.stringify(r.reports)}`,
    );
    assert.deepEqual(new Set(r.reports.map((x) => x.worker)), new Set([r.victim, r.survivor]));
    assert.equal(new Set(r.reports.map((x) => x.jobId)).size, 1, 'the same BullMQ job, re-run after its lock was lost');
    assert.equal(slow.status, 'succeeded');
    assert.equal(slow.attempts, 2, 'two starts of the job: the stopped one and the re-run');
    assert.equal(slow.builds, 2, 'the view shows the double build');
    assert.deepEqual([...(slow.builtBy ?? [])].sort(), [r.victim, r.survivor].sort());
    assert.equal(slow.divergentBuild, undefined);
  });

  it('flags the double build of a builder that writes random bytes, and the run still succeeds with one valid copy', async () => {
    const r = await runLostLock({ size: 'small', builder: 'random' });
    const { outcome, slow } = r;
    process.stderr.write(`lost-lock (random): ${outcome.notes.join(' | ')}\n`);
    assert.deepEqual(outcome.lost, [], 'the coordinator kept one valid copy, and the run succeeded');
    assert.equal(r.runStatus, 'succeeded');
    assert.deepEqual(r.counts, { succeeded: outcome.derivations });
    assert.equal(outcome.builtTwiceDifferent, 1, 'the audit sees two different NAR hashes');
    assert.equal(slow.builds, 2);
    const flag = slow.divergentBuild ?? '';
    assert.match(flag, /not reproducible/, `the coordinator flagged the derivation: ${JSON.stringify(slow)}`);
    // the later reporter is named, with the other build and both hashes
    const later = r.reports[1]!.worker;
    const earlier = r.reports[0]!.worker;
    assert.match(flag, new RegExp(`the build by ${later} .*the build by ${earlier}`));
    assert.equal((flag.match(/sha256:[0-9a-df-np-sv-z]{52}/g) ?? []).length, 2, flag);
  });
});
