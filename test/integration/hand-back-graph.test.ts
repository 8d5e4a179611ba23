import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PlannedDerivation } from '@nixfarm/coordinator';
import { redisKeys, runEventSchema, type BuildHandedBackEvent, type BuildStartedEvent, type RunEvent } from '@nixfarm/shared';
import { handlerTestBed } from '../harness/handler-test-bed.js';
import { plannedDerivation } from '../harness/planned-derivation.js';

/**
 * How the coordinator applies a hand-back (WorkerEventHandler and the graph's
 * Lua script on a real redis-server; the run service is a stand-in that
 * records what it is asked): the node is queued again only while it runs on
 * the worker that hands it back, the try is not counted, nothing is queued
 * twice, and `nixfarm build` hears of it.
 */
const HASH = 'c'.repeat(32);
const DRV = `/nix/store/${HASH}-slow.drv`;
const OUT = `/nix/store/${'d'.repeat(32)}-slow`;

function planned(): PlannedDerivation {
  return plannedDerivation({ hash: HASH, name: 'slow', out: OUT });
}

const started = (worker: string, at: number): BuildStartedEvent => ({ type: 'started', drvPath: DRV, worker, jobId: HASH, attempt: 0, at });
const handedBack = (worker: string, at: number): BuildHandedBackEvent => ({
  type: 'handed-back',
  drvPath: DRV,
  worker,
  jobId: HASH,
  attempt: 0,
  reason: `worker ${worker} was told to leave now`,
  at,
});

describe('applying hand-backs', () => {
  const bed = handlerTestBed();

  async function setup() {
    const { graph, handler, queued: enqueued } = await bed.setup([planned()]);
    const runEvents = async (): Promise<RunEvent[]> =>
      ((await bed.redis().xrange(redisKeys.runEvents('r1'), '-', '+')) as Array<[string, string[]]>).map(([, f]) => runEventSchema.parse(JSON.parse(f[1]!)));
    return { graph, handler, enqueued, runEvents };
  }

  it('queues the build again without counting the try, and tells the run', async () => {
    const { graph, handler, enqueued, runEvents } = await setup();
    await handler.handle(started('w1', 1000));
    assert.equal((await graph.view(HASH))?.attempts, 1);
    await handler.handle(handedBack('w1', 2000));
    const view = await graph.view(HASH);
    assert.equal(view?.status, 'queued');
    assert.equal(view?.attempts, 0, 'the handed-back try is not counted');
    assert.equal(view?.worker, undefined);
    assert.equal(view?.startedAt, undefined);
    assert.deepEqual(enqueued, [], 'the worker returned the BullMQ job itself: nothing is queued twice');
    assert.deepEqual(JSON.parse((await bed.redis().hget(redisKeys.drv(HASH), 'handedBack'))!), {
      worker: 'w1',
      reason: 'worker w1 was told to leave now',
      at: 2000,
    });
    assert.deepEqual(
      (await runEvents()).map((e) => e.type),
      ['drv-started', 'drv-handed-back'],
    );
    assert.deepEqual((await runEvents())[1], { type: 'drv-handed-back', drvPath: DRV, worker: 'w1', reason: 'worker w1 was told to leave now', at: 2000 });

    // Another worker takes it: one try counted, the one that runs.
    await handler.handle(started('w2', 3000));
    assert.deepEqual([(await graph.view(HASH))?.status, (await graph.view(HASH))?.worker, (await graph.view(HASH))?.attempts], ['running', 'w2', 1]);
  });

  it('ignores a hand-back from a worker the build no longer runs on, and a repeated one', async () => {
    const { graph, handler, runEvents } = await setup();
    // w1 lost its lock; w2 runs the build now; w1's late hand-back must not touch it
    await handler.handleAll([started('w1', 1000), started('w2', 2000), handedBack('w1', 2500)]);
    assert.deepEqual([(await graph.view(HASH))?.status, (await graph.view(HASH))?.worker], ['running', 'w2']);
    assert.equal((await graph.view(HASH))?.attempts, 2);
    // applied once, then a redelivery of the same report (a coordinator restart) changes nothing
    await handler.handleAll([handedBack('w2', 3000), handedBack('w2', 3000)]);
    assert.deepEqual([(await graph.view(HASH))?.status, (await graph.view(HASH))?.attempts], ['queued', 1]);
    assert.equal((await runEvents()).filter((e) => e.type === 'drv-handed-back').length, 1);
    // a finished build is never reopened by a hand-back
    await handler.handle(started('w3', 4000));
    await graph.finish(HASH, 'succeeded', { worker: 'w3', outputs: { out: OUT } });
    await handler.handle(handedBack('w3', 5000));
    assert.equal(await graph.status(HASH), 'succeeded');
  });

  it('applies a hand-back and a start elsewhere in one batch in their order', async () => {
    const { graph, handler } = await setup();
    await handler.handleAll([started('w1', 1000), handedBack('w1', 2000), started('w2', 2100)]);
    assert.deepEqual([(await graph.view(HASH))?.status, (await graph.view(HASH))?.worker, (await graph.view(HASH))?.attempts], ['running', 'w2', 1]);
  });
});
