import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { betterPlacedThan, comparePlacement } from '@nixfarm/shared';

const w = (name: string, running: number, maxJobs: number, speedFactor: number) => ({ name, running, maxJobs, speedFactor });

describe("Nix's placement rule", () => {
  it('prefers the lowest load/speedFactor, then the higher speed factor, then the lower load', () => {
    assert.ok(comparePlacement(w('a', 1, 4, 4), w('b', 1, 4, 1)) < 0, '1/4 beats 1/1');
    assert.ok(comparePlacement(w('a', 0, 1, 4), w('b', 0, 1, 1)) < 0, 'both idle: the faster wins');
    assert.ok(comparePlacement(w('a', 2, 4, 2), w('b', 1, 4, 1)) < 0, 'equal ratio: the faster wins');
    assert.ok(comparePlacement(w('a', 1, 4, 1), w('b', 1, 4, 1)) === 0);
    // No rounding (Hydra rounds the ratio, hydra#484): 0.26 vs 0.25 still differ.
    assert.ok(comparePlacement(w('a', 1, 8, 4), w('b', 26, 200, 100)) < 0);
  });

  it('only counts competitors with a free slot that rank strictly ahead', () => {
    const self = w('slow', 0, 1, 1);
    assert.deepEqual(
      betterPlacedThan(self, [w('fast', 0, 1, 4)]).map((c) => c.name),
      ['fast'],
    );
    assert.deepEqual(betterPlacedThan(self, [w('fast', 1, 1, 4)]), [], 'a busy fast worker does not hold work back');
    assert.deepEqual(betterPlacedThan(self, [w('twin', 0, 1, 1)]), [], 'an equal does not either');
    assert.deepEqual(betterPlacedThan(w('fast', 0, 1, 4), [self]), []);
  });
});
