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
