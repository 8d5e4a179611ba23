import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, describe, it } from 'node:test';
import type { DerivationView, QueueSummary } from '@nixfarm/shared';
import { NIXFARM_BIN } from '../harness/test-farm.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { sleep } from '../harness/poll.js';
import { runIdOf } from '../harness/build-timeline.js';
import { chain, freshSalt, layeredDag } from '../harness/nix-fixtures.js';
import { killGroup } from '../harness/process-cleanup.js';

/** Worker name -> how many of the run's derivations it built. */
function placement(rows: readonly DerivationView[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(r.worker ?? '(none)', (counts.get(r.worker ?? '(none)') ?? 0) + 1);
  return counts;
}

describe('routing by system features (real workers)', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'kvm-box', features: ['kvm'], maxJobs: 2 },
      { name: 'plain-box', maxJobs: 2 },
      { name: 'bench-box', mandatoryFeatures: ['benchmark'], maxJobs: 2 },
    ],
  });

  async function buildAndPlace(fixture: { file: string }): Promise<{ rows: DerivationView[]; where: Map<string, number> }> {
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()], { timeoutMs: 60_000 });
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runIdOf(result.stderr)}/derivations`);
    assert.ok(
      derivations.every((d) => d.status === 'succeeded'),
      JSON.stringify(derivations),
    );
    return { rows: derivations, where: placement(derivations) };
  }

  it('builds requiredSystemFeatures = [ "kvm" ] only on the worker that supports kvm', async () => {
    // the other two are idle the whole time: only the rule keeps the work off them
    const { rows, where } = await buildAndPlace(layeredDag({ layers: 1, width: 6, requiredSystemFeatures: ['kvm'] }));
    assert.equal(rows.length, 7);
    assert.deepEqual([...where], [['kvm-box', 7]]);
  });

  it('builds derivations that require the mandatory feature "benchmark" only on the worker that has it', async () => {
    const { rows, where } = await buildAndPlace(chain(3, { requiredSystemFeatures: ['benchmark'] }));
    assert.equal(rows.length, 3);
    assert.deepEqual([...where], [['bench-box', 3]]);
  });

  it('keeps plain builds off the worker with a mandatory feature, even while it is idle; they may go anywhere else', async () => {
    const { rows, where } = await buildAndPlace(layeredDag({ layers: 1, width: 10 }));
    assert.equal(rows.length, 11);
    assert.equal(where.get('bench-box'), undefined, `plain builds landed on bench-box: ${JSON.stringify([...where])}`);
    assert.equal((where.get('kvm-box') ?? 0) + (where.get('plain-box') ?? 0), 11);
  });
});

describe('platforms never starve each other (real workers)', () => {
  // registered before the farm's hooks, so that it runs before the farm stops
  after(async () => {
    if (flood !== undefined && flood.exitCode === null) killGroup(flood.pid, 'SIGKILL');
  });
  const farm = farmForSuite({
    workers: [
      { name: 'linux', maxJobs: 1 },
      { name: 'darwin', systems: ['x86_64-darwin'], nixConfig: ['extra-platforms = x86_64-darwin'], maxJobs: 1 },
    ],
  });
  let flood: ChildProcess | undefined;

  async function linuxQueue(): Promise<QueueSummary | undefined> {
    const { queues } = await farm.api<{ queues: QueueSummary[] }>('/api/queues');
    return queues.find((q) => q.name === 'build@x86_64-linux');
  }

  it('builds an x86_64-darwin derivation within seconds while 500 x86_64-linux builds are queued', async (t) => {
    const linuxFlood = layeredDag({ layers: 1, width: 500 });
    // in the background, killable: the 500 are never waited for
    flood = spawn(
      process.execPath,
      [NIXFARM_BIN, 'build', '--coordinator', farm.address.httpUrl, linuxFlood.file, '-A', 'all', '--argstr', 'salt', freshSalt()],
      {
        stdio: 'ignore',
        detached: true,
        env: { ...process.env, NIX_CONFIG: 'substituters =', NIXFARM_TOKEN: farm.adminToken },
      },
    );

    // until the flood is queued and the linux worker is busy with it
    const deadline = Date.now() + 60_000;
    let queue = await linuxQueue();
    while (!(queue !== undefined && queue.waiting >= 400 && queue.running >= 1)) {
      assert.equal(flood.exitCode, null, 'the flood is still being built');
      if (Date.now() > deadline) assert.fail(`the flood never got queued: ${JSON.stringify(queue)}\n${farm.diagnostics()}`);
      await sleep(200);
      queue = await linuxQueue();
    }

    const started = Date.now();
    const darwin = await farm.build([chain(1, { system: 'x86_64-darwin' }).file, '-A', 'all', '--argstr', 'salt', freshSalt()], { timeoutMs: 30_000 });
    const seconds = (Date.now() - started) / 1000;
    const during = await linuxQueue();
    assert.equal(darwin.exitCode, 0, `${darwin.stderr}\n${farm.diagnostics()}`);
    assert.ok(seconds < 10, `the darwin build took ${seconds.toFixed(1)} s behind the linux flood`);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runIdOf(darwin.stderr)}/derivations`);
    assert.deepEqual(
      derivations.map((d) => [d.status, d.worker]),
      [['succeeded', 'darwin']],
    );
    assert.ok(during !== undefined && during.waiting >= 200, `hundreds of linux builds are still queued: ${JSON.stringify(during)}`);
    t.diagnostic(`darwin build: ${seconds.toFixed(1)} s with ${during?.waiting} linux builds waiting`);
  });
});
