import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WorkerEventHandler, type PlannedDerivation, type OutputVerifier } from '@nixfarm/coordinator';
import type { BuildFinishedEvent } from '@nixfarm/shared';
import { handlerTestBed } from '../harness/handler-test-bed.js';
import { plannedDerivation } from '../harness/planned-derivation.js';

/**
 * The retry policy of one module, WorkerEventHandler, on a real graph in a real
 * redis-server; the Nix adapter and the run service are stand-ins that record
 * what they are asked (a unit test of one module, so fakes are allowed here).
 */
const HASH = 'a'.repeat(32);
const DRV = `/nix/store/${HASH}-flaky.drv`;
const OUT = `/nix/store/${'b'.repeat(32)}-flaky`;

function planned(): PlannedDerivation {
  return plannedDerivation({ hash: HASH, name: 'flaky', out: OUT });
}

function finished(outcome: BuildFinishedEvent['outcome'], error?: string): BuildFinishedEvent {
  return {
    type: 'finished',
    drvPath: DRV,
    worker: 'w1',
    jobId: HASH,
    attempt: 0,
    outcome,
    logTail: [],
    timings: { copyInMs: 1, buildMs: 1, copyOutMs: 1, totalMs: 3 },
    at: Date.now(),
    ...(error ? { error } : {}),
  };
}

describe('retry policy for infrastructure failures', () => {
  const bed = handlerTestBed();

  async function setup() {
    const { graph, handler, queued: requeued, finalized } = await bed.setup([planned()]);
    return { graph, handler, requeued, finalized };
  }

  it('retries an aborted build with exponential back-off, at most 5 tries, then reports it aborted', async () => {
    const { graph, handler, requeued, finalized } = await setup();
    for (let attempt = 1; attempt <= 5; attempt++) {
      assert.equal(await graph.markStarted(HASH, 'w1', Date.now()), true);
      await handler.handle(finished('aborted', 'nix-copy-closure failed: connection reset'));
      if (attempt < 5) {
        assert.equal(await graph.status(HASH), 'queued', `try ${attempt} is queued again`);
        assert.equal(requeued.at(-1)?.delayMs, 1000 * 2 ** (attempt - 1), `back-off after try ${attempt}`);
        assert.equal(requeued.at(-1)?.attempt, attempt, 'a fresh BullMQ job id per try');
      }
    }
    assert.equal(requeued.length, 4);
    assert.equal(await graph.status(HASH), 'aborted');
    assert.match((await graph.view(HASH))?.error ?? '', /gave up after 5 tries/);
    assert.deepEqual(finalized, ['r1']);
  });

  it('never retries a builder failure', async () => {
    const { graph, handler, requeued } = await setup();
    await graph.markStarted(HASH, 'w1', Date.now());
    await handler.handle(finished('failed', 'builder exited 1'));
    assert.equal(await graph.status(HASH), 'failed');
    assert.equal(requeued.length, 0);
  });

  it('ends an abort its reporter marks not retryable (its Nix cannot build) at once, with its error as reported', async () => {
    const { graph, handler, requeued, finalized } = await setup();
    const error =
      "the coordinator's Nix cannot build: error: the group 'nixbld' specified in 'build-users-group' does not exist\n  fix: create Nix's build users";
    await graph.markStarted(HASH, 'w1', Date.now());
    await handler.handle({ ...finished('aborted', error), errorCode: 'nix-build-users-missing', retryable: false });
    assert.equal(await graph.status(HASH), 'aborted');
    assert.equal(requeued.length, 0, 'not retried');
    assert.equal(await graph.attempts(HASH), 1);
    assert.equal((await graph.view(HASH))?.error, error, 'no "gave up after N tries": there was one');
    assert.deepEqual(finalized, ['r1']);
  });

  it('still retries an abort marked retryable, as one without the mark', async () => {
    const { graph, handler, requeued } = await setup();
    await graph.markStarted(HASH, 'w1', Date.now());
    await handler.handle({
      ...finished('aborted', 'Nix could not build it (MiscFailure): error: a path vanished'),
      errorCode: 'build-not-done',
      retryable: true,
    });
    assert.equal(await graph.status(HASH), 'queued');
    assert.equal(requeued.length, 1);
  });

  it('treats a success whose outputs are not valid on the coordinator as an infrastructure failure', async () => {
    const { graph, handler, requeued } = await setup();
    const missing: OutputVerifier = { invalidPaths: async (paths) => new Set(paths) };
    const strict = new WorkerEventHandler({ ...(handler as unknown as { deps: ConstructorParameters<typeof WorkerEventHandler>[0] }).deps, verifier: missing });
    await graph.markStarted(HASH, 'w1', Date.now());
    await strict.handle({ ...finished('succeeded'), outputs: { out: OUT } });
    assert.equal(await graph.status(HASH), 'queued');
    assert.equal(requeued.length, 1);
  });
});
