import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DerivationView, QueueSummary, RunView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { freshSalt, layeredDag, scriptedFixture } from '../harness/nix-fixtures.js';
import { sleep, waitFor } from '../harness/poll.js';

/** A chain of four `sleep 1` builds, the top one also taking a side leaf: five derivations, a critical path of four builds. */
function smallRun(): string {
  const step = (name: string, inputs: string) => `  ${name} = mk "small-${name}" "echo \${salt} ${inputs}; \${bb}/bin/busybox sleep 1; echo ${name} > $out";\n`;
  const ref = (name: string) => `\${${name}}`;
  const lets = step('c0', '') + step('c1', ref('c0')) + step('c2', ref('c1')) + step('side', '') + step('top', `${ref('c2')} ${ref('side')}`);
  return scriptedFixture('fair-small', '  inherit top;\n', lets);
}

/** The longest chain of the small run's own build times (worker clock, copy-in to copy-out): c0 -> c1 -> c2 -> top, or side -> top. */
function criticalPathMs(rows: readonly DerivationView[]): number {
  const took = (name: string) => {
    const row = rows.find((r) => r.name === `small-${name}`);
    assert.ok(row?.startedAt !== undefined && row.finishedAt !== undefined, `small-${name} was built`);
    return row.finishedAt - row.startedAt;
  };
  return Math.max(took('c0') + took('c1') + took('c2'), took('side')) + took('top');
}

describe('runs of one priority share the slots', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'fair-a', maxJobs: 2 },
      { name: 'fair-b', maxJobs: 2 },
    ],
    logLevel: 'info',
  });

  it('finishes a small run beside a 2,000-derivation run within 2x its own critical path; cancelling the large run leaves nothing of it queued', async () => {
    const big = layeredDag({ layers: 40, width: 50, sleepSeconds: 1 });
    assert.equal(big.expectedDrvCount, 2001);
    const large = await farm.submitInBackground([big.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    // Every slot busy with the large run, and its ready builds queued far ahead of anything new.
    await waitFor(
      'the large run to fill the four slots',
      () => (large.build.stderrSoFar().match(/ building /g) ?? []).length >= 4,
      180_000,
      () => farm.diagnostics(),
    );
    await sleep(2000);

    const result = await farm.build([smallRun(), '-A', 'top', '--argstr', 'salt', freshSalt()], { timeoutMs: 300_000 });
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const smallId = /run (\w+)/.exec(result.stderr)![1]!;
    const run = await farm.api<RunView>(`/api/runs/${smallId}`);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${smallId}/derivations`);
    assert.equal(derivations.length, 5);
    // From the run's registration (after its evaluation, which no scheduling changes) to its end.
    const wallMs = run.finishedAt! - run.createdAt;
    const pathMs = criticalPathMs(derivations);
    const largeRows = await large.rows();
    const largeDone = largeRows.filter((r) => r.status === 'succeeded').length;
    process.stderr.write(
      `small run: ${wallMs} ms for a critical path of ${pathMs} ms (${(wallMs / pathMs).toFixed(2)}x); large run: ${largeDone} of 2001 built\n`,
    );
    assert.ok(wallMs <= 2 * pathMs, `the small run took ${wallMs} ms, more than twice its critical path of ${pathMs} ms`);
    assert.ok(largeDone < 2001 - 100, 'the large run was still far from done: the small one did not just wait for it');

    const cancel = await farm.cli(['cancel', large.runId, '--coordinator', farm.address.httpUrl]);
    assert.equal(cancel.exitCode, 0, cancel.stderr);
    assert.equal((await large.build.result).exitCode, 1);
    const queued = (await large.rows()).filter((r) => r.status === 'queued' || r.status === 'waiting');
    assert.deepEqual(queued, [], 'no derivation of the cancelled run is left waiting or queued');
    await waitFor('every queue to be empty', async () => {
      const { queues } = await farm.api<{ queues: QueueSummary[] }>('/api/queues');
      return queues.every((q) => q.waiting === 0 && q.running === 0);
    });
  });
});
