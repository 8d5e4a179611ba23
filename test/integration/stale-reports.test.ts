import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import type { OutputVerifier, PlannedDerivation } from '@nixfarm/coordinator';
import { redisKeys, type BuildFinishedEvent, type BuildStartedEvent, type WorkerOutcome } from '@nixfarm/shared';
import { handlerTestBed } from '../harness/handler-test-bed.js';
import { hashOf, plannedDerivation } from '../harness/planned-derivation.js';

/**
 * Reports from attempts that no longer decide a build, applied by
 * WorkerEventHandler to a real graph in a real redis-server: a worker that
 * lost its job's lock (paused, partitioned) while another worker re-runs the
 * same BullMQ job reports late. A success from any attempt counts; a failure
 * or an abort only from the running attempt. The run service is a stand-in
 * that records what is queued and finalized; the logger records warnings.
 */
function node(name: string, inputs: string[] = []): PlannedDerivation {
  return plannedDerivation({ hash: hashOf(name), name, out: `/nix/store/${hashOf(`${name}out`)}-${name}`, inputs: inputs.map(hashOf) });
}

const TIMINGS = { copyInMs: 1, buildMs: 1, copyOutMs: 1, totalMs: 3 };
const HASH_A = 'sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq';
const HASH_B = 'sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s';

/** One try of a build, as its reports name it. */
type Attempt = Pick<BuildStartedEvent, 'worker' | 'jobId' | 'attempt'>;

function started(n: PlannedDerivation, a: Attempt): BuildStartedEvent {
  return { type: 'started', drvPath: n.drv.path, ...a, at: Date.now() };
}

function finished(n: PlannedDerivation, a: Attempt, outcome: WorkerOutcome, extra: Partial<BuildFinishedEvent> = {}): BuildFinishedEvent {
  return { type: 'finished', drvPath: n.drv.path, ...a, outcome, outputs: n.job.outputs, logTail: [], timings: TIMINGS, at: Date.now(), ...extra };
}

describe('stale reports after a lost lock', () => {
  const bed = handlerTestBed();

  async function setup(nodes: PlannedDerivation[], verifier?: OutputVerifier) {
    const warnings: Array<{ msg: string; fields: Record<string, unknown> }> = [];
    const logger = pino(
      { level: 'warn' },
      { write: (line: string) => void warnings.push({ msg: JSON.parse(line).msg as string, fields: JSON.parse(line) as Record<string, unknown> }) },
    );
    return { ...(await bed.setup(nodes, { ...(verifier === undefined ? {} : { verifier }), logger, retryBaseDelayMs: 10 })), warnings };
  }

  const A1 = (n: PlannedDerivation): Attempt => ({ worker: 'alpha', jobId: n.hash, attempt: 1 });
  const B2 = (n: PlannedDerivation): Attempt => ({ worker: 'beta', jobId: n.hash, attempt: 2 });

  it('drops a late abort and a late failure from the worker that lost the lock while another worker runs the build', async () => {
    const slow = node('slow');
    const top = node('top', ['slow']);
    const { graph, handler, queued, finalized, warnings } = await setup([slow, top]);
    await handler.handleAll([started(slow, A1(slow)), started(slow, B2(slow))]);
    await handler.handleAll([finished(slow, A1(slow), 'aborted', { error: 'copy-out: connection reset' })]);
    assert.equal(await graph.status(slow.hash), 'running', 'not queued again under a new job: that would be a third build');
    assert.equal(queued.length, 0, 'nothing queued');
    await handler.handleAll([finished(slow, A1(slow), 'failed', { error: 'builder killed' })]);
    await handler.handleAll([finished(slow, A1(slow), 'timed-out')]);
    const running = await graph.view(slow.hash);
    assert.equal(running?.status, 'running', 'a stale failure does not end a build another worker runs');
    assert.equal(running?.worker, 'beta');
    assert.equal(running?.attempts, 2);
    const stale = warnings.filter((w) => /stale report dropped/.test(w.msg));
    assert.equal(stale.length, 3, `three stale reports logged: ${JSON.stringify(warnings)}`);
    assert.equal(stale[0]?.fields.worker, 'alpha');
    assert.match(String(stale[0]?.fields.why), /beta/);

    await handler.handleAll([finished(slow, B2(slow), 'succeeded')]);
    assert.equal(await graph.status(slow.hash), 'succeeded');
    assert.deepEqual(
      queued.map((r) => r.hash),
      [top.hash],
      'the dependent is released once',
    );
    const view = await graph.view(slow.hash);
    assert.equal(view?.builds, 1);
    assert.deepEqual(view?.builtBy, ['beta']);
    assert.deepEqual(finalized, [], 'the run goes on with its dependent');
    assert.equal(await bed.redis().hget(redisKeys.run('r1'), 'failed'), '0');
  });

  it('the running attempt still decides: its abort is retried and then a late failure of the replaced job is stale', async () => {
    const n = node('flaky');
    const { graph, handler, queued } = await setup([n]);
    await handler.handleAll([started(n, A1(n)), started(n, B2(n))]);
    await handler.handleAll([finished(n, B2(n), 'aborted', { error: 'lost the SSH session' })]);
    assert.equal(await graph.status(n.hash), 'queued', 'the running attempt aborted: retried');
    assert.equal(queued.length, 1);
    assert.equal(queued[0]?.attempt, 2, 'under a new job id');
    await handler.handleAll([finished(n, A1(n), 'failed', { error: 'late' })]);
    assert.equal(await graph.status(n.hash), 'queued', 'the replaced job cannot end the retry');
    await handler.handleAll([finished(n, A1(n), 'aborted')]);
    assert.equal(queued.length, 1, 'nor queue another one');
    const retry: Attempt = { worker: 'gamma', jobId: `${n.hash}.2`, attempt: 1 };
    await handler.handleAll([started(n, A1(n))]);
    assert.equal((await graph.view(n.hash))?.status, 'queued', 'a late start of the replaced job is stale too');
    await handler.handleAll([started(n, retry), finished(n, retry, 'failed', { error: 'builder exited 1' })]);
    assert.equal(await graph.status(n.hash), 'failed', "the retry's own failure ends it");
    assert.equal((await graph.view(n.hash))?.attempts, 3);
  });

  it("retries a build whose job id is reused with the next try (the coordinator's own builder), and only older tries are stale", async () => {
    const n = node('local');
    const { graph, handler, queued } = await setup([n]);
    const local = (attempt: number): Attempt => ({ worker: 'coordinator', jobId: `local-${n.hash}`, attempt });
    await handler.handleAll([started(n, local(0)), finished(n, local(0), 'aborted', { error: 'store busy' })]);
    assert.equal(queued.length, 1);
    await handler.handleAll([started(n, local(1))]);
    assert.equal((await graph.view(n.hash))?.status, 'running', 'the next try of the same job id runs');
    await handler.handleAll([finished(n, local(0), 'failed')]);
    assert.equal(await graph.status(n.hash), 'running', 'the replaced try cannot end it');
    await handler.handleAll([finished(n, local(1), 'aborted', { error: 'store busy again' })]);
    assert.equal(queued.length, 2, 'its own abort is retried');
    await handler.handleAll([started(n, local(2)), finished(n, local(2), 'succeeded')]);
    const view = await graph.view(n.hash);
    assert.equal(view?.status, 'succeeded');
    assert.equal(view?.attempts, 3);
  });

  it('accepts a late success from the stale attempt, counts the build once, and records both builds', async () => {
    const slow = node('late');
    const top = node('latetop', ['late']);
    const { graph, handler, queued } = await setup([slow, top]);
    await handler.handleAll([started(slow, A1(slow)), started(slow, B2(slow))]);
    await handler.handleAll([finished(slow, A1(slow), 'succeeded')]);
    assert.equal(await graph.status(slow.hash), 'succeeded', 'a success from any attempt: its outputs are valid');
    await handler.handleAll([finished(slow, B2(slow), 'succeeded')]);
    assert.deepEqual(
      queued.map((r) => r.hash),
      [top.hash],
      'released once',
    );
    assert.equal(await bed.redis().hget(redisKeys.run('r1'), 'remaining'), '1', 'counted once: only the dependent is left');
    const view = await graph.view(slow.hash);
    assert.equal(view?.builds, 2);
    assert.deepEqual(view?.builtBy, ['alpha', 'beta']);
    assert.equal(view?.divergentBuild, undefined, 'no hashes reported: nothing to compare');
  });

  it('counts a start and a success once when a batch is applied again (a coordinator that died before acknowledging it)', async () => {
    const n = node('again');
    const { graph, handler } = await setup([n]);
    const batch = [started(n, A1(n)), finished(n, A1(n), 'succeeded')];
    await handler.handleAll([batch[0]!]);
    await handler.handleAll([batch[0]!]);
    assert.equal((await graph.view(n.hash))?.attempts, 1, 'the same start applied twice is one attempt');
    await handler.handleAll(batch);
    await handler.handleAll(batch);
    const view = await graph.view(n.hash);
    assert.equal(view?.status, 'succeeded');
    assert.equal(view?.builds, 1);
  });

  it('a stale start of an earlier try does not take the build from the running attempt', async () => {
    const n = node('order');
    const { graph, handler } = await setup([n]);
    await handler.handleAll([started(n, B2(n)), started(n, A1(n))]);
    const view = await graph.view(n.hash);
    assert.equal(view?.worker, 'beta');
    assert.equal(view?.attempts, 1);
    await handler.handleAll([finished(n, A1(n), 'failed')]);
    assert.equal(await graph.status(n.hash), 'running');
  });

  it('flags a success whose NAR hashes differ from the copy in the coordinator store, in the same store query that checks validity', async () => {
    const n = node('random');
    const out = n.job.outputs.out!;
    const calls: string[] = [];
    const verifier: OutputVerifier = {
      invalidPaths: async (paths) => {
        calls.push(`invalidPaths ${paths.length}`);
        return new Set();
      },
      narHashes: async (paths) => {
        calls.push(`narHashes ${paths.length}`);
        return new Map(paths.map((p) => [p, HASH_A]));
      },
    };
    const { graph, handler, warnings } = await setup([n], verifier);
    await handler.handleAll([started(n, A1(n)), started(n, B2(n))]);
    await handler.handleAll([finished(n, A1(n), 'succeeded', { narHashes: { [out]: HASH_A } })]);
    assert.deepEqual(calls, ['narHashes 1'], 'one query: validity and hashes together');
    assert.equal((await graph.view(n.hash))?.divergentBuild, undefined, 'the same hash as the store: reproducible');
    await handler.handleAll([finished(n, B2(n), 'succeeded', { narHashes: { [out]: HASH_B } })]);
    const view = await graph.view(n.hash);
    assert.equal(view?.status, 'succeeded', 'the run keeps the coordinator copy');
    assert.equal(view?.builds, 2);
    assert.match(view?.divergentBuild ?? '', /not reproducible: the build by beta .* than the build by alpha/);
    assert.ok(view?.divergentBuild?.includes(HASH_A) && view.divergentBuild.includes(HASH_B), view?.divergentBuild);
    const warning = warnings.find((w) => /divergent double build/.test(w.msg));
    assert.ok(warning, `warned: ${JSON.stringify(warnings)}`);
    assert.equal(warning.fields.drvPath, n.drv.path);
    assert.deepEqual(warning.fields.earlierBuilders, ['alpha']);

    calls.length = 0;
    const plain = node('plain');
    await graph.registerRun('r1', [plain], { priority: 0, rebuildFailed: false });
    await handler.handleAll([started(plain, A1(plain)), finished(plain, A1(plain), 'succeeded')]);
    assert.deepEqual(calls, ['invalidPaths 1'], 'no hashes reported: the plain validity query, nothing more');
  });

  it('compares a hex NAR hash with the base-32 one the store sends', async () => {
    const n = node('hex');
    const out = n.job.outputs.out!;
    const verifier: OutputVerifier = { invalidPaths: async () => new Set(), narHashes: async (paths) => new Map(paths.map((p) => [p, HASH_A])) };
    const { graph, handler } = await setup([n], verifier);
    const hex = 'sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03';
    await handler.handleAll([started(n, A1(n)), finished(n, A1(n), 'succeeded', { narHashes: { [out]: hex } })]);
    assert.equal((await graph.view(n.hash))?.divergentBuild, undefined);
  });
});
