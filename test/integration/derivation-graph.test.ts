import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { topologicalOrder, type PlannedDerivation } from '@nixfarm/coordinator';
import { ProbedGraph } from '../harness/probed-graph.js';
import { redisKeys } from '@nixfarm/shared';
import { startPrivateRedis, type PrivateRedis } from '../harness/private-redis.js';
import { hashOf, plannedDerivation } from '../harness/planned-derivation.js';

// A fake-free check of the graph's Lua scripts against a real redis-server.

function node(name: string, inputs: string[] = []): PlannedDerivation {
  const hash = hashOf(name);
  return plannedDerivation({ hash, name, out: `/nix/store/${hash}-${name}`, inputs: inputs.map(hashOf) });
}

const OPTS = { priority: 0, rebuildFailed: false };

async function startRun(redis: Redis, runId: string): Promise<void> {
  await redis.hset(redisKeys.run(runId), { status: 'running', remaining: '1', failed: '0' });
}

describe('DerivationGraph on real Redis', () => {
  let server: PrivateRedis;
  let redis: Redis;
  let graph: ProbedGraph;

  before(async () => {
    server = await startPrivateRedis({});
  });
  beforeEach(async () => {
    redis?.disconnect();
    redis = new Redis(server.url, { maxRetriesPerRequest: null });
    await redis.flushall();
    graph = new ProbedGraph(redis);
  });
  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  it("hands each chunk's ready derivations over as soon as it is registered, inputs first, before the later chunks exist", async () => {
    // 12,000 derivations in pairs (leaf, dependent), listed dependents first: three chunks of 5,000, 5,000 and 2,000.
    const nodes: PlannedDerivation[] = [];
    // fixed-width names: hashOf pads and cuts them into distinct hash parts
    const id = (i: number): string => String(i).padStart(5, '0');
    for (let i = 0; i < 6000; i++) nodes.push(node(`p${id(i)}`, [`l${id(i)}`]));
    for (let i = 0; i < 6000; i++) nodes.push(node(`l${id(i)}`));
    await startRun(redis, 'big');
    const seen: Array<{ ready: number; registered: number; built: boolean }> = [];
    const outcome = await graph.registerRun('big', nodes, OPTS, async (part) => {
      seen.push({
        ready: part.ready.length,
        registered: await redis.scard(redisKeys.runDrvs('big')),
        built: part.ready.every((r) => r.job.name.startsWith('l')),
      });
    });
    // Every leaf before any dependent: the first chunk is 5,000 leaves, the second the last 1,000 and 4,000 dependents, handed over at once.
    assert.deepEqual(
      seen.map((s) => s.ready),
      [5000, 1000, 0],
    );
    assert.deepEqual(
      seen.map((s) => s.registered),
      [5000, 10_000, 12_000],
      "each chunk's ready derivations were handed over before the next chunk was registered",
    );
    assert.ok(seen.every((s) => s.built));
    assert.equal(outcome.ready.length, 0, 'handed over already');
    assert.equal(await redis.scard(redisKeys.runDrvs('big')), 12_000);
  });

  it('queues leaves, releases a dependent only when all its inputs succeeded, and ends the run', async () => {
    const a = node('a');
    const b = node('b');
    const c = node('c', ['a', 'b']);
    await startRun(redis, 'run1');
    const { ready } = await graph.registerRun('run1', [c, a, b], OPTS);
    assert.deepEqual(ready.map((r) => r.hash).sort(), [a.hash, b.hash].sort());
    await redis.hincrby(redisKeys.run('run1'), 'remaining', -1);

    assert.equal(await graph.markStarted(a.hash, 'w1', 1), true);
    const afterA = await graph.finish(a.hash, 'succeeded', { worker: 'w1' });
    assert.deepEqual(afterA.released, [], 'c still waits for b');
    const afterB = await graph.finish(b.hash, 'succeeded', { worker: 'w1' });
    assert.deepEqual(
      afterB.released.map((r) => r.hash),
      [c.hash],
    );
    assert.equal(afterB.released[0]!.job.drvPath, c.job.drvPath);
    const afterC = await graph.finish(c.hash, 'succeeded', { worker: 'w1' });
    assert.deepEqual(afterC.finishedRuns, ['run1']);
    // A duplicate report changes nothing.
    const dup = await graph.finish(c.hash, 'failed', {});
    assert.equal(dup.applied, false);
    assert.equal(await graph.status(c.hash), 'succeeded');
  });

  it('counts a node that succeeded after the planner looked as built, and rebuilds one that succeeded before', async () => {
    const shared = node('raced');
    const top = node('racetop', ['raced']);
    await startRun(redis, 'runA');
    await graph.registerRun('runA', [shared], OPTS);
    // run B's planner saw the output invalid just before run A's build finished
    const checkedAt = Date.now() - 1;
    await graph.markStarted(shared.hash, 'w1', 1);
    await graph.finish(shared.hash, 'succeeded', { worker: 'w1' });
    await startRun(redis, 'runB');
    const b = await graph.registerRun('runB', [shared, top], { ...OPTS, checkedAt });
    assert.deepEqual(
      b.ready.map((r) => r.hash),
      [top.hash],
      'the dependent is ready at once; the finished input is not queued again',
    );
    assert.equal(await graph.status(shared.hash), 'succeeded');
    assert.equal(await graph.attempts(shared.hash), 1);
    assert.equal(await redis.hget(redisKeys.run('runB'), 'remaining'), '2', 'only the dependent (and the sentinel) is pending');

    // A run planned after the success saw the output invalid for another reason (collected since): it rebuilds.
    await startRun(redis, 'runC');
    const c = await graph.registerRun('runC', [shared], { ...OPTS, checkedAt: Date.now() + 1000 });
    assert.deepEqual(
      c.ready.map((r) => r.hash),
      [shared.hash],
    );
  });

  it('marks every transitive dependent dependency-failed and counts them for each run', async () => {
    const a = node('fa');
    const b = node('fb', ['fa']);
    const c = node('fc', ['fb']);
    const d = node('fd');
    await startRun(redis, 'run2');
    await graph.registerRun('run2', [a, b, c, d], OPTS);
    await redis.hincrby(redisKeys.run('run2'), 'remaining', -1);
    const failed = await graph.finish(a.hash, 'failed', { error: 'exit 3' });
    assert.deepEqual(failed.dependencyFailed.sort(), [b.hash, c.hash].sort());
    assert.equal(await graph.status(c.hash), 'dependency-failed');
    assert.deepEqual(failed.finishedRuns, [], 'd is still pending');
    const done = await graph.finish(d.hash, 'succeeded', {});
    assert.deepEqual(done.finishedRuns, ['run2']);
    assert.equal(await redis.hget(redisKeys.run('run2'), 'failed'), '3');
  });

  it('shares a derivation between two runs: the second joins it instead of queuing it again', async () => {
    const shared = node('shared');
    const top1 = node('topone', ['shared']);
    const top2 = node('toptwo', ['shared']);
    await startRun(redis, 'r1');
    await startRun(redis, 'r2');
    const first = await graph.registerRun('r1', [shared, top1], OPTS);
    const second = await graph.registerRun('r2', [shared, top2], OPTS);
    assert.deepEqual(
      first.ready.map((r) => r.hash),
      [shared.hash],
    );
    assert.deepEqual(second.ready, [], 'shared is already queued');
    assert.equal(second.joined, 1);
    const out = await graph.finish(shared.hash, 'succeeded', {});
    assert.deepEqual(out.released.map((r) => r.hash).sort(), [top1.hash, top2.hash].sort());
    assert.deepEqual((await graph.runsOf(shared.hash)).sort(), ['r1', 'r2']);
  });

  it("answers a run's inputs within the run from the stored dependents, leaving out another run's dependents, and each derivation's runs", async () => {
    const shared = node('shared');
    const leaf = node('leaf');
    const top1 = node('topone', ['shared', 'leaf']);
    const top2 = node('toptwo', ['shared']);
    await startRun(redis, 'r1');
    await startRun(redis, 'r2');
    await graph.registerRun('r1', [shared, leaf, top1], OPTS);
    await graph.registerRun('r2', [shared, top2], OPTS);
    const inputs = await graph.inputsWithin(await graph.derivationsOf('r1'));
    assert.deepEqual(
      [...inputs].map(([h, i]) => [h, i.sort()]).sort(),
      [
        [shared.hash, []],
        [leaf.hash, []],
        [top1.hash, [shared.hash, leaf.hash].sort()],
      ].sort(),
    );
    assert.deepEqual(await graph.inputsWithin([]), new Map());
    const runs = await graph.runsOfAll([shared.hash, top2.hash, shared.hash]);
    assert.deepEqual(
      [...runs].map(([h, r]) => [h, r.sort()]),
      [
        [shared.hash, ['r1', 'r2']],
        [top2.hash, ['r2']],
      ],
    );
  });

  it('reports a derivation that failed before as a cached failure, unless asked to rebuild it', async () => {
    const broken = node('broken');
    const user = node('user', ['broken']);
    await startRun(redis, 'first');
    await graph.registerRun('first', [broken, user], OPTS);
    await graph.finish(broken.hash, 'failed', { error: 'exit 3' });

    await startRun(redis, 'second');
    const second = await graph.registerRun('second', [broken, node('user', ['broken'])], OPTS);
    assert.deepEqual(second.cachedFailures, [broken.hash]);
    assert.deepEqual(second.dependencyFailed, [user.hash], 'its dependent fails at once, not built');
    assert.deepEqual(second.ready, []);
    assert.equal(await redis.hincrby(redisKeys.run('second'), 'remaining', -1), 0, 'nothing left: the run ends at once');

    await startRun(redis, 'third');
    const third = await graph.registerRun('third', [broken, node('user', ['broken'])], { priority: 0, rebuildFailed: true });
    assert.deepEqual(
      third.ready.map((r) => r.hash),
      [broken.hash],
      '--rebuild-failed queues it again',
    );
    assert.deepEqual(third.cachedFailures, []);
  });

  describe('a run that grows while its evaluation streams in', () => {
    const open = (runId: string) => graph.openRun({ runId, now: Date.now(), request: {}, results: [], total: 0, priority: 0 });

    it('registers new nodes into a running run, releases the ready ones, and counts them', async () => {
      const a = node('growa');
      const b = node('growb', ['growa']);
      await open('g1');
      const first = await graph.registerRun('g1', [a], OPTS);
      assert.deepEqual(
        first.ready.map((r) => r.hash),
        [a.hash],
      );
      await graph.markStarted(a.hash, 'w1', 1);
      const grown = await graph.growRun('g1', [b, a], OPTS);
      assert.equal(grown.type, 'grown');
      assert.deepEqual(grown.type === 'grown' ? grown.ready : null, [], 'b waits for a; a is in the run already');
      const run = await graph.run('g1', ['total', 'remaining', 'failed']);
      assert.deepEqual(run, { total: 1, remaining: 3, failed: 0 }, 'total counts the growth; remaining: a, b and the open sentinel');
      const afterA = await graph.finish(a.hash, 'succeeded', { worker: 'w1' });
      assert.deepEqual(
        afterA.released.map((r) => r.hash),
        [b.hash],
      );
      assert.deepEqual(afterA.finishedRuns, []);
    });

    it('joins nodes another run has pending, and counts already-succeeded inputs as built', async () => {
      const shared = node('growshared');
      const done = node('growdone');
      const top = node('growtop', ['growshared', 'growdone']);
      await open('other');
      await graph.registerRun('other', [shared, done], OPTS);
      await graph.finish(done.hash, 'succeeded', { worker: 'w1' });
      await open('g2');
      const grown = await graph.growRun('g2', [shared, top], OPTS);
      assert.equal(grown.type === 'grown' ? grown.joined : -1, 1, 'the shared node is joined, not queued again');
      assert.deepEqual(grown.type === 'grown' ? grown.ready : null, []);
      assert.deepEqual((await graph.runsOf(shared.hash)).sort(), ['g2', 'other']);
      const out = await graph.finish(shared.hash, 'succeeded', {});
      assert.deepEqual(
        out.released.map((r) => r.hash),
        [top.hash],
        'the top waits only for the shared node: its other input had succeeded',
      );
      // A node that succeeded before is built again only when the planner saw its outputs invalid (it was planned): like register.
      const again = await graph.growRun('g2', [done], OPTS);
      assert.deepEqual(again.type === 'grown' ? again.ready.map((r) => r.hash) : null, [done.hash]);
    });

    it('does not end a drained run while it is open; closing it ends it, once', async () => {
      const a = node('growlone');
      await open('g3');
      await graph.registerRun('g3', [a], OPTS);
      const out = await graph.finish(a.hash, 'succeeded', {});
      assert.deepEqual(out.finishedRuns, [], 'open: more derivations may come');
      assert.equal((await graph.run('g3', ['remaining'])).remaining, 1);
      const b = node('growlater');
      const grown = await graph.growRun('g3', [b], OPTS);
      assert.deepEqual(grown.type === 'grown' ? grown.ready.map((r) => r.hash) : null, [b.hash]);
      assert.equal(await graph.closeRun('g3'), false, 'b is still pending');
      assert.equal(await graph.closeRun('g3'), false, 'a second close changes nothing');
      assert.deepEqual((await graph.finish(b.hash, 'succeeded', {})).finishedRuns, ['g3']);
      assert.deepEqual(await graph.growRun('g3', [node('toolate')], OPTS), { type: 'refused', reason: 'closed' });

      await open('g4');
      assert.equal(await graph.closeRun('g4'), true, 'nothing registered: drained at once');
      assert.equal(await graph.endRun({ runId: 'g4', status: 'succeeded', now: Date.now() }), true);
      assert.deepEqual(await graph.growRun('g4', [node('ended')], OPTS), { type: 'refused', reason: 'not-running' });
      assert.equal(await graph.endRun({ runId: 'g4', status: 'failed', now: Date.now() }), false, 'ended once');
      assert.deepEqual(await redis.smembers(redisKeys.activeRuns), ['g3']);
    });
  });

  it('orders inputs before dependents and rejects cycles', () => {
    const order = topologicalOrder([node('z', ['y']), node('y', ['x']), node('x')]).map((n) => n.drv.name);
    assert.deepEqual(order, ['x', 'y', 'z']);
    assert.throws(() => topologicalOrder([node('p', ['q']), node('q', ['p'])]), /cycle/);
  });
});
