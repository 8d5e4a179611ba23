import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PlanOrder } from '@nixfarm/coordinator';
import { criticalPathBucket, queuePriority } from '@nixfarm/shared';

interface WeighedNode {
  hash: string;
  inputs: string[];
  weightMs: number;
}

const criticalPaths = (nodes: readonly WeighedNode[]) => new PlanOrder(nodes).criticalPaths((n) => n.weightMs);

describe('critical-path order', () => {
  it('weighs each node by the heaviest chain through its dependents', () => {
    // a -> b -> d, a -> c -> d ; c is slow
    const cp = criticalPaths([
      { hash: 'd', inputs: ['b', 'c'], weightMs: 1000 },
      { hash: 'a', inputs: [], weightMs: 1000 },
      { hash: 'b', inputs: ['a'], weightMs: 1000 },
      { hash: 'c', inputs: ['a'], weightMs: 5000 },
      { hash: 'leaf', inputs: [], weightMs: 1000 },
    ]);
    assert.equal(cp.get('d'), 1000);
    assert.equal(cp.get('c'), 6000);
    assert.equal(cp.get('b'), 2000);
    assert.equal(cp.get('a'), 7000);
    assert.equal(cp.get('leaf'), 1000);
  });

  it('orders every leaf before any node with an input, inputs before dependents, and rejects a cycle', () => {
    const order = new PlanOrder([
      { hash: 'd', inputs: ['b', 'c'] },
      { hash: 'a', inputs: [] },
      { hash: 'b', inputs: ['a', 'elsewhere'] },
      { hash: 'c', inputs: ['a'] },
      { hash: 'leaf', inputs: [] },
    ]);
    assert.deepEqual(
      order.slice(0, 5).map((n) => n.hash),
      ['a', 'leaf', 'b', 'c', 'd'],
      'an input outside the plan does not count',
    );
    assert.equal(order.leaves, 2);
    assert.throws(
      () =>
        new PlanOrder([
          { hash: 'p', inputs: ['q'] },
          { hash: 'q', inputs: ['p'] },
        ]),
      /cycle/,
    );
  });

  it('handles a chain of 100,000 without recursion limits', () => {
    const nodes = Array.from({ length: 100_000 }, (_, i) => ({ hash: `n${i}`, inputs: i === 0 ? [] : [`n${i - 1}`], weightMs: 1 }));
    assert.equal(criticalPaths(nodes).get('n0'), 100_000);
  });

  it('orders queue priorities by run priority first, then longer critical path, within BullMQ range', () => {
    assert.ok(queuePriority(10, 0) < queuePriority(0, 10_000_000), 'a higher run priority always goes first');
    assert.ok(queuePriority(0, 60_000) < queuePriority(0, 1000), 'a longer remaining chain goes first');
    assert.equal(queuePriority(0, undefined), queuePriority(0, undefined), 'FIFO: equal priorities keep arrival order');
    for (const p of [-1000, 0, 1000]) {
      for (const ms of [0, 1, 1e9]) {
        const q = queuePriority(p, ms);
        assert.ok(q >= 1 && q < 2 ** 21, `${q} in BullMQ's range`);
      }
    }
    assert.ok(criticalPathBucket(2000) > criticalPathBucket(1000));
    assert.equal(criticalPathBucket(1e12), 511);
    assert.ok(criticalPathBucket(12 * 3600 * 1000) < criticalPathBucket(17 * 3600 * 1000), 'distinct up to about 18 h');
    assert.ok(criticalPathBucket(1020) < criticalPathBucket(1060), 'steps of about 2 %');
  });
});
