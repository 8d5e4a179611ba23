import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { attributeOutcomeOf, evaluationProgressOf } from '@nixfarm/coordinator';
import { BUILD_STATUSES, PENDING_STATUSES } from '@nixfarm/shared';

const NONE = { succeeded: 0, cached: 0, failed: 0, 'dependency-failed': 0, unsupported: 0, cancelled: 0, pending: 0 };

describe('a jobset evaluation progress from its stored counters', () => {
  it('is undefined without a state: the run is not a jobset', () => {
    assert.equal(evaluationProgressOf({}, 0, 0), undefined);
  });

  it('while evaluating: left is what listing found without a result, elapsed runs to now, pace is per second', () => {
    const got = evaluationProgressOf(
      { state: 'evaluating', done: '6', failed: '2', discovered: '10', discovering: '1', startedAt: '1000', 'builds:succeeded': '1', 'builds:cached': '2' },
      1,
      4_000,
    );
    assert.deepEqual(got, {
      state: 'evaluating',
      done: 6,
      failed: 2,
      discovered: 10,
      discovering: true,
      left: 4,
      startedAt: 1000,
      elapsedMs: 3000,
      attributesPerSecond: 2,
      builds: { ...NONE, succeeded: 1, cached: 2, pending: 1 },
    });
  });

  it('never shows fewer discovered than done (a result can be recorded before the listing that found it is)', () => {
    const got = evaluationProgressOf({ state: 'evaluating', done: '3', failed: '0', discovered: '2', discovering: '0', startedAt: '0' }, 0, 1000)!;
    assert.equal(got.discovered, 3);
    assert.equal(got.left, 0);
    assert.equal(got.discovering, false);
  });

  it('once done: everything found has its result and discovery has ended; elapsed stops at the end', () => {
    const got = evaluationProgressOf({ state: 'done', done: '9', failed: '3', discovered: '8', discovering: '1', startedAt: '0', endedAt: '3000' }, 0, 99_000)!;
    assert.equal(got.discovered, 9);
    assert.equal(got.left, 0);
    assert.equal(got.discovering, false);
    assert.equal(got.elapsedMs, 3000);
    assert.equal(got.attributesPerSecond, 3);
  });

  it('an evaluation that stopped keeps what it never evaluated as left, and its reason', () => {
    const got = evaluationProgressOf(
      { state: 'failed', done: '4', failed: '0', discovered: '10', discovering: '0', startedAt: '0', endedAt: '0', error: 'lost' },
      0,
      5,
    )!;
    assert.equal(got.left, 6);
    assert.equal(got.error, 'lost');
    assert.equal(got.attributesPerSecond, 0, 'no time elapsed: no pace');
  });

  it('before the first listing ends, discovery counts as going on', () => {
    assert.equal(evaluationProgressOf({ state: 'evaluating', startedAt: '0' }, 0, 0)!.discovering, true);
  });
});

describe('what a derivation status means for its attributes', () => {
  it('pending while the derivation waits, is queued or builds; every failure kind counts as failed', () => {
    for (const status of BUILD_STATUSES) {
      const outcome = attributeOutcomeOf(status);
      if ((PENDING_STATUSES as readonly string[]).includes(status)) assert.equal(outcome, 'pending', status);
      else if (['succeeded', 'cancelled', 'unsupported', 'dependency-failed'].includes(status)) assert.equal(outcome, status);
      else assert.equal(outcome, 'failed', status);
    }
  });
});
