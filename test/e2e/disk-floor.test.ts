import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { WorkerListing } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { chain, freshSalt } from '../harness/nix-fixtures.js';
import { pollFor, sleep } from '../harness/poll.js';
import { auditRun } from '../chaos/run-audit.js';
import { outcomeProblems } from '../chaos/chaos-scenario.js';
import { FLOOR_MIB, SMALL_DISK_MIB, diskFloorScenario, fillDisk, freeDisk, runDiskFloor } from '../chaos/scenarios/disk-floor.js';

const MiB = 1024 * 1024;

describe('a worker below its free-disk floor', () => {
  const farm = farmForSuite({ workers: [{ name: 'phi', nixTmpfsMiB: SMALL_DISK_MIB, extraArgs: ['--min-free-disk', String(FLOOR_MIB)] }] });

  async function phi(): Promise<WorkerListing> {
    const listed = await farm.cli(['workers', '--json']);
    assert.equal(listed.exitCode, 0, listed.stderr);
    const found = (JSON.parse(listed.stdout) as WorkerListing[]).find((w) => w.name === 'phi');
    assert.ok(found, listed.stdout);
    return found;
  }

  it('stops taking builds and says why, then resumes by itself when space is freed; nothing queued is lost', async () => {
    // With space: it builds, and advertises what it has free on its small disk.
    const warm = await farm.build([chain(1).file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    assert.equal(warm.exitCode, 0, warm.stderr);
    const before = await phi();
    assert.equal(before.paused, undefined);
    assert.ok(
      before.freeDiskBytes !== undefined && before.freeDiskBytes > FLOOR_MIB * MiB && before.freeDiskBytes <= SMALL_DISK_MIB * MiB,
      `free ${before.freeDiskBytes}`,
    );

    const fill = fillDisk(farm.workers.get('phi')!.machine.nixDir, FLOOR_MIB / 2);
    try {
      const paused = await pollFor(
        async () => {
          const w = await phi();
          return w.paused === undefined ? undefined : w;
        },
        15_000,
        () => 'phi to advertise the pause',
      );
      assert.match(paused.paused!, new RegExp(`^free space on /nix/store is \\d+ MiB, below the floor of ${FLOOR_MIB} MiB \\(--min-free-disk\\)$`));
      assert.ok(paused.freeDiskBytes! < FLOOR_MIB * MiB, `free ${paused.freeDiskBytes}`);
      const shown = await farm.cli(['workers']);
      assert.match(shown.stdout, /phi .*disk \d+\.\d MiB free {2}PAUSED: takes no new builds: free space on \/nix\/store/);

      // A new run waits: its first derivation stays queued, and `nixfarm why` names the reason.
      const { build, runId, rows } = await farm.submitInBackground([chain(2).file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
      const bottom = await pollFor(
        async () => (await rows()).find((r) => r.name === 'link-0' && r.status === 'queued'),
        30_000,
        () => 'link-0 to be queued',
      );
      await sleep(4000);
      const still = (await rows()).find((r) => r.name === 'link-0');
      assert.equal(still?.status, 'queued', 'a paused worker takes no build');
      assert.equal(still?.attempts, 0);
      const why = await farm.cli(['why', bottom.drvPath]);
      assert.equal(why.exitCode, 0, why.stderr);
      assert.match(
        why.stdout,
        /Why: ready, waiting: no capable live worker takes new builds now \(phi paused: takes no new builds until it resumes by itself: free space on \/nix\/store is \d+ MiB, below the floor of 16 MiB \(--min-free-disk\)\)/,
      );
      assert.match(why.stdout, /phi\s+paused\s+paused: /);

      // Space back: it resumes by itself, builds the run, and says so.
      freeDisk(fill);
      const result = await build.result;
      assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
      const built = await rows();
      assert.deepEqual(
        built.map((r) => [r.status, r.worker, r.attempts]),
        [
          ['succeeded', 'phi', 1],
          ['succeeded', 'phi', 1],
        ],
      );
      assert.deepEqual((await auditRun(farm, runId)).lost, []);
      assert.equal((await phi()).paused, undefined);
      const log = readFileSync(farm.workers.get('phi')!.logFile, 'utf8');
      assert.equal(log.match(/low on disk: taking no new builds until space is freed/g)?.length, 1, 'the pause is logged once');
      assert.equal(log.match(/disk space is back above the floor: taking builds again/g)?.length, 1, 'and the resumption once');
    } finally {
      freeDisk(fill);
    }
  });
});

describe('chaos scenario disk-floor (small)', () => {
  it('pauses the low worker mid-run, the other builds, it resumes when space is freed; nothing lost', async () => {
    const { outcome, facts } = await runDiskFloor({ size: 'small' });
    process.stderr.write(`disk-floor: ${JSON.stringify({ ...outcome, facts: { ...facts, build: undefined } })}\n`);
    assert.deepEqual(outcomeProblems(diskFloorScenario, outcome), []);
    assert.match(facts.pausedReason, /below the floor of 16 MiB \(--min-free-disk\)/);
    assert.ok(facts.freeDiskBytesWhilePaused >= 0 && facts.freeDiskBytesWhilePaused < FLOOR_MIB * MiB);
    assert.deepEqual(facts.startedWhilePaused, []);
    assert.ok(facts.builtElsewhereWhilePaused >= 2);
  });
});
