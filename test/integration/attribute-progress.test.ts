import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { RunAttributes, attributeStatuses, type PlannedDerivation } from '@nixfarm/coordinator';
import { redisKeys, type EvaluatedAttribute, type EvaluationProgress } from '@nixfarm/shared';
import { ProbedGraph } from '../harness/probed-graph.js';
import { privateRedisForSuite } from '../harness/private-redis.js';
import { hashOf, plannedDerivation } from '../harness/planned-derivation.js';

// A jobset run's evaluation counters on a real redis-server and a real graph: the
// per-outcome counts kept as attributes are recorded and derivations end agree with
// what the attribute list computes from the graph, at every step.

function node(name: string, inputs: string[] = []): PlannedDerivation {
  const hash = hashOf(name);
  return plannedDerivation({ hash, name, out: `/nix/store/${hash}-${name}`, inputs: inputs.map(hashOf) });
}

function derived(attr: string, n: PlannedDerivation): EvaluatedAttribute {
  return { attr, attrPath: attr.split('.'), drvPath: n.job.drvPath, outputs: n.job.outputs, name: n.job.name };
}

function broken(attr: string): EvaluatedAttribute {
  return { attr, attrPath: [attr], error: `error: ${attr} throws`, errorKind: 'evaluation-error' };
}

const OPTS = { priority: 0, rebuildFailed: false };
const RUN = 'jobset1';

describe('RunAttributes: evaluation progress and attribute build counts on real Redis', () => {
  const redisOf = privateRedisForSuite('attribute-progress');
  let redis: Redis;
  let graph: ProbedGraph;
  let attributes: RunAttributes;

  beforeEach(async () => {
    redis = redisOf();
    await redis.flushall();
    graph = new ProbedGraph(redis);
    attributes = new RunAttributes(redis);
    await redis.hset(redisKeys.run(RUN), { status: 'running', remaining: '1', failed: '0' });
  });

  /** The counts the progress keeps, and the same counted from the attribute list with the graph's statuses now: they must agree. */
  async function both(): Promise<{ progress: EvaluationProgress; fromList: Record<string, number> }> {
    const progress = (await attributes.progress(RUN))!;
    const list = await attributeStatuses(graph, RUN, await attributes.page(RUN));
    const fromList: Record<string, number> = { succeeded: 0, cached: 0, failed: 0, 'dependency-failed': 0, unsupported: 0, cancelled: 0, pending: 0 };
    for (const a of list) if (a.buildStatus !== 'evaluation-failed') fromList[a.buildStatus]!++;
    assert.deepEqual(progress.builds, fromList, 'kept counts = counts from the list');
    assert.equal(progress.failed, list.filter((a) => a.buildStatus === 'evaluation-failed').length);
    assert.equal(progress.done, list.length);
    return { progress, fromList };
  }

  it('counts each attribute once under its outcome as its derivation ends, shared derivations and cached ones included', async () => {
    const shared = node('shared');
    const a = node('a', ['shared']);
    const b = node('b', ['shared']);
    const bad = node('bad');
    const after = node('after', ['bad']);
    const valid = node('valid');
    await attributes.start(RUN, 1_000);
    assert.deepEqual(await attributes.progress(RUN, 3_000), {
      state: 'evaluating',
      done: 0,
      failed: 0,
      discovered: 0,
      discovering: true,
      left: 0,
      startedAt: 1_000,
      elapsedMs: 2_000,
      attributesPerSecond: 0,
      builds: { succeeded: 0, cached: 0, failed: 0, 'dependency-failed': 0, unsupported: 0, cancelled: 0, pending: 0 },
    });
    await attributes.discover(RUN, { discovered: 6, discovering: true });

    await graph.registerRun(RUN, [shared, a, b, bad, after], OPTS);
    // `a` twice (two attributes, one derivation), `valid` never registered: its outputs were valid (cached).
    for (const attribute of [derived('a', a), derived('alias.a', a), derived('b', b), broken('throws'), derived('valid', valid)])
      await attributes.record(RUN, attribute);
    let { progress } = await both();
    assert.equal(progress.builds.pending, 3, 'a twice and b');
    assert.equal(progress.builds.cached, 1);
    assert.equal(progress.failed, 1);
    assert.equal(progress.discovered, 6);
    assert.equal(progress.left, 1);
    assert.equal(progress.discovering, true);

    await graph.finish(shared.hash, 'succeeded', {});
    await graph.finish(a.hash, 'succeeded', {});
    ({ progress } = await both());
    assert.equal(progress.builds.succeeded, 2, 'both attributes of a');
    assert.equal(progress.builds.pending, 1, 'b');

    // Recorded after its derivation already ended (a fast failure): counted at once, not left pending.
    await graph.finish(bad.hash, 'failed', { error: 'exit 3' });
    await attributes.record(RUN, derived('bad', bad));
    await attributes.record(RUN, derived('after', after));
    await attributes.discover(RUN, { discovered: 8, discovering: false });
    ({ progress } = await both());
    assert.equal(progress.builds.failed, 1);
    assert.equal(progress.builds['dependency-failed'], 1);
    assert.equal(progress.discovering, false);
    assert.equal(progress.left, 1, '8 discovered, 7 done');

    await graph.finish(b.hash, 'succeeded', {});
    await attributes.end(RUN, { state: 'failed', error: 'evaluator crashed' }, 8_000);
    // A late discovery report does not change an ended evaluation.
    await attributes.discover(RUN, { discovered: 99, discovering: true });
    ({ progress } = await both());
    assert.deepEqual(progress, {
      state: 'failed',
      done: 7,
      failed: 1,
      discovered: 8,
      discovering: false,
      left: 1,
      startedAt: 1_000,
      endedAt: 8_000,
      error: 'evaluator crashed',
      elapsedMs: 7_000,
      attributesPerSecond: 1,
      builds: { succeeded: 3, cached: 1, failed: 1, 'dependency-failed': 1, unsupported: 0, cancelled: 0, pending: 0 },
    });
    assert.equal(await redis.hlen(redisKeys.runPendingAttributes(RUN)), 0, 'nothing left to look at on the next read');
  });

  it('answers undefined for a run that is not a jobset', async () => {
    assert.equal(await attributes.progress('plainrun'), undefined);
  });
});
