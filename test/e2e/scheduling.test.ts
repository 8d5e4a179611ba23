import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DerivationView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { peakConcurrency } from '../harness/build-timeline.js';
import { chain, freshSalt, layeredDag } from '../harness/nix-fixtures.js';

describe("placement by Nix's speed-factor rule in a pull model", () => {
  const farm = farmForSuite({
    workers: [
      { name: 'fast', speedFactor: 4, maxJobs: 1 },
      { name: 'slow', speedFactor: 1, maxJobs: 1 },
    ],
  });

  async function derivationsOf(stderr: string): Promise<DerivationView[]> {
    const runId = /run (\w+)/.exec(stderr)?.[1];
    assert.ok(runId);
    return (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`)).derivations;
  }

  it('runs a sequential chain on the fast worker when both are idle', async () => {
    const fixture = chain(20);
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const rows = await derivationsOf(result.stderr);
    assert.equal(rows.length, 20);
    const onFast = rows.filter((r) => r.worker === 'fast').length;
    assert.ok(onFast >= 18, `${onFast} of 20 on the fast worker`);
  });

  it('spreads a wide layer over both workers without exceeding either max-jobs', async () => {
    const fixture = layeredDag({ layers: 1, width: 40 });
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const rows = await derivationsOf(result.stderr);
    const onFast = rows.filter((r) => r.worker === 'fast').length;
    const onSlow = rows.filter((r) => r.worker === 'slow').length;
    assert.ok(onFast > 0 && onSlow > 0, `both used (fast ${onFast}, slow ${onSlow})`);
    assert.equal(peakConcurrency(rows, 'fast'), 1);
    assert.equal(peakConcurrency(rows, 'slow'), 1);
  });
});

describe('locality: the next link of a chain stays on the worker that holds its input (equal workers)', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'left', maxJobs: 2 },
      { name: 'right', maxJobs: 2 },
    ],
  });

  it('builds a 20-link chain with at most two hops between the workers', async () => {
    const fixture = chain(20);
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const runId = /run (\w+)/.exec(result.stderr)?.[1];
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    const byName = new Map(derivations.map((d) => [d.name, d.worker]));
    const workers = fixture.links.map((link) => byName.get(link));
    assert.ok(
      workers.every((w) => w === 'left' || w === 'right'),
      JSON.stringify(workers),
    );
    // Without locality both idle workers race for each released link: about half the links hopped.
    const hops = workers.filter((w, i) => i > 0 && w !== workers[i - 1]).length;
    assert.ok(hops <= 2, `${hops} hops: ${workers.join(' ')}`);
  });
});
