import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { DerivationView, WorkerListing } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { waitFor } from '../harness/poll.js';
import { freshSalt, writeBusyboxDir } from '../harness/nix-fixtures.js';

/** A shared slow derivation and one quick top per run, so two runs overlap on the slow one. */
function sharedFixture(dir: string): string {
  mkdirSync(dir, { recursive: true });
  writeBusyboxDir(dir);
  const file = join(dir, 'shared.nix');
  writeFileSync(
    file,
    `{ salt ? "", seconds ? "30" }:
let bb = builtins.path { path = ./busybox; name = "busybox"; };
    mk = name: script: builtins.derivation { inherit name; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; args = [ "-c" script ]; };
in rec {
  slow = mk "slow-shared" "echo \${salt}; \${bb}/bin/busybox sleep \${seconds}; echo done > $out";
  topA = mk "top-a" "echo \${slow} > $out";
  topB = mk "top-b" "echo \${slow} > $out";
}
`,
  );
  return file;
}

describe('cancelling a run', () => {
  const farm = farmForSuite({ workers: [{ name: 'epsilon', maxJobs: 2 }] });
  let file: string;

  before(async () => {
    file = sharedFixture(join(farm.dir, 'cancel-fixture'));
  });

  const runningOnWorker = async () => (await farm.api<{ workers: WorkerListing[] }>('/api/workers')).workers.find((w) => w.name === 'epsilon')?.running ?? -1;

  it('stops its running build on the worker within 2 s and ends the run as cancelled', async () => {
    const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, file, '-A', 'topA', '--argstr', 'salt', freshSalt()]);
    await waitFor('the slow build to start', () => build.stderrSoFar().includes('building slow-shared on epsilon'));
    const runId = /run (\w+)/.exec(build.stderrSoFar())![1]!;
    const cancel = await farm.cli(['cancel', runId, '--coordinator', farm.address.httpUrl]);
    assert.equal(cancel.exitCode, 0, cancel.stderr);
    assert.match(cancel.stdout, /cancelled/);
    await waitFor('the worker to be free', async () => (await runningOnWorker()) === 0, 5000);
    // Timed from the moment the coordinator cancelled the run: the CLI's own start-up on a loaded machine is not the farm's latency.
    const { finishedAt: cancelledAt } = await farm.api<{ finishedAt: number }>(`/api/runs/${runId}`);
    assert.ok(Date.now() - cancelledAt < 2500, `worker free ${Date.now() - cancelledAt} ms after the coordinator cancelled the run`);
    const result = await build.result;
    assert.equal(result.exitCode, 1);
    assert.match(result.stderr, /cancelled/);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    assert.deepEqual(
      derivations.map((d) => d.status),
      ['cancelled', 'cancelled'],
    );
    const run = await farm.api<{ status: string }>(`/api/runs/${runId}`);
    assert.equal(run.status, 'cancelled');
  });

  it('keeps a build another run still needs', async () => {
    const salt = freshSalt();
    const a = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, file, '-A', 'topA', '--argstr', 'salt', salt, '--argstr', 'seconds', '8']);
    await waitFor('the slow build to start', () => a.stderrSoFar().includes('building slow-shared on epsilon'));
    const b = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, file, '-A', 'topB', '--argstr', 'salt', salt, '--argstr', 'seconds', '8']);
    await waitFor('run B to start', () => /run \w+/.test(b.stderrSoFar()));
    const runA = /run (\w+)/.exec(a.stderrSoFar())![1]!;
    const cancel = await farm.cli(['cancel', runA, '--coordinator', farm.address.httpUrl]);
    assert.equal(cancel.exitCode, 0, cancel.stderr);
    assert.equal((await a.result).exitCode, 1);
    const resultB = await b.result;
    assert.equal(resultB.exitCode, 0, `${resultB.stderr}\n${farm.diagnostics()}`);
    const runB = /run (\w+)/.exec(resultB.stderr)![1]!;
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runB}/derivations`);
    const slow = derivations.find((d) => d.drvPath.endsWith('-slow-shared.drv'));
    assert.equal(slow?.status, 'succeeded');
    assert.equal(slow?.attempts, 1, 'the shared build was neither stopped nor started twice');
  });
});
