import { closeSync, fstatSync, ftruncateSync, openSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkerListing } from '@nixfarm/shared';
import { TestFarm, type CommandResult } from '../../harness/test-farm.js';
import { runIdOf } from '../../harness/build-timeline.js';
import { freshSalt, layeredDag } from '../../harness/nix-fixtures.js';
import { pollFor } from '../../harness/poll.js';
import type { ChaosScenario, ScenarioOptions, ScenarioOutcome } from '../chaos-scenario.js';
import { auditRun, outcomeOf } from '../run-audit.js';
import { eventsOfType, workerEventLog } from '../worker-event-log.js';

/** The small worker's disk: its /nix is a tmpfs this big, with a floor that fits in it. */
export const SMALL_DISK_MIB = 64;
export const FLOOR_MIB = 16;
/** Left free when the disk is filled: below the floor. */
const LEFT_FREE_MIB = 8;
const MiB = 1024 * 1024;

export interface DiskFloorFacts {
  /** the reason the worker advertised while paused */
  pausedReason: string;
  freeDiskBytesWhilePaused: number;
  /** builds the small worker started while it was paused (must be none) */
  startedWhilePaused: string[];
  /** builds the other worker started meanwhile */
  builtElsewhereWhilePaused: number;
  build: CommandResult;
}

/**
 * Fills a machine's /nix (a tmpfs) from the host until about `leftMiB` is free; returns the file to delete.
 * Written a MiB at a time and measured as it goes: the worker writes to the same disk meanwhile, so
 * one write sized from a single measurement can hit ENOSPC. A full disk gives `leftMiB` back.
 */
export function fillDisk(nixDir: string, leftMiB: number): string {
  const file = join(nixDir, 'nixfarm-test-fill');
  const chunk = Buffer.alloc(MiB, 1);
  const fd = openSync(file, 'w');
  try {
    for (;;) {
      const { bavail, bsize } = statfsSync(nixDir);
      const room = bavail * bsize - leftMiB * MiB;
      if (room <= 0) break;
      try {
        writeSync(fd, chunk, 0, Math.min(room, MiB));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
        ftruncateSync(fd, Math.max(0, fstatSync(fd).size - leftMiB * MiB));
        break;
      }
    }
  } finally {
    closeSync(fd);
  }
  return file;
}

export function freeDisk(file: string): void {
  rmSync(file, { force: true });
}

/**
 * Scenario 7: a worker's disk fills up in the middle of a run. Below its
 * free-space floor it takes no new builds (its running one finishes), says
 * why in its heartbeat, and the other worker builds the rest; when the space
 * is freed it resumes by itself. Nothing queued is lost.
 * Recovered: from freeing the space until the worker started a build again.
 */
export const diskFloorScenario: ChaosScenario = {
  name: 'disk-floor',
  description: `a worker's disk fills mid-run (below --min-free-disk ${FLOOR_MIB}): it takes no new builds and says why, the other builds; space freed: it resumes`,
  recoveryBoundSeconds: 30,
  run: async (options) => (await runDiskFloor(options)).outcome,
};

/** The scenario with the facts behind its outcome, for the e2e test's own assertions. */
export async function runDiskFloor(options: ScenarioOptions): Promise<{ outcome: ScenarioOutcome; facts: DiskFloorFacts }> {
  const farm = await TestFarm.start({
    workers: [{ name: 'phi', nixTmpfsMiB: SMALL_DISK_MIB, extraArgs: ['--min-free-disk', String(FLOOR_MIB)] }, { name: 'chi' }],
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  });
  let fill: string | undefined;
  try {
    const full = options.size === 'full';
    const fixture = layeredDag({ layers: 1, width: full ? 14 : 8, sleepSeconds: 2 });
    const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()], {
      timeoutMs: 600_000,
    });
    await pollFor(
      () => /building \S+ on phi/.test(build.stderrSoFar()),
      120_000,
      () => `phi to start a build:\n${build.stderrSoFar()}`,
      50,
    );

    fill = fillDisk(farm.workers.get('phi')!.machine.nixDir, LEFT_FREE_MIB);
    const paused = await pollFor(
      async () => (await farm.api<{ workers: WorkerListing[] }>('/api/workers')).workers.find((w) => w.name === 'phi' && w.paused !== undefined),
      15_000,
      () => 'phi to advertise the pause',
      50,
    );
    const pausedAt = Date.now();
    options.progress?.(`phi paused: ${paused.paused}`);
    // The other worker goes on meanwhile: two builds started after the pause, then the space comes back.
    await pollFor(
      async () => eventsOfType(await workerEventLog(farm), 'started').filter((s) => s.worker === 'chi' && s.at > pausedAt).length >= 2,
      120_000,
      () => 'chi to start two builds while phi is paused',
      200,
    );
    freeDisk(fill);
    const freedAt = Date.now();
    const resumed = await pollFor(
      async () => eventsOfType(await workerEventLog(farm), 'started').find((s) => s.worker === 'phi' && s.at > freedAt),
      60_000,
      () => 'phi to start a build after the space was freed',
      100,
    ).catch(() => undefined);
    const recoveredMs = resumed === undefined ? undefined : resumed.at - freedAt;

    const result = await build.result;
    const runId = runIdOf(result.stderr);
    const audit = await auditRun(farm, runId);
    const starts = eventsOfType(await workerEventLog(farm), 'started');
    const startedWhilePaused = starts.filter((s) => s.worker === 'phi' && s.at > pausedAt && s.at < freedAt).map((s) => s.drvPath);
    const builtElsewhereWhilePaused = starts.filter((s) => s.worker === 'chi' && s.at > pausedAt && s.at < freedAt).length;

    const lost: string[] = [];
    if (result.exitCode !== 0) lost.push(`nixfarm build exited ${result.exitCode}: ${result.stderr.slice(-2000)}`);
    if (startedWhilePaused.length > 0) lost.push(`phi started builds while below its disk floor: ${startedWhilePaused.join(' ')}`);
    const facts: DiskFloorFacts = {
      pausedReason: paused.paused!,
      freeDiskBytesWhilePaused: paused.freeDiskBytes ?? -1,
      startedWhilePaused,
      builtElsewhereWhilePaused,
      build: result,
    };
    return {
      facts,
      outcome: outcomeOf(audit, {
        problems: lost,
        recoveredMs,
        notes: [`phi paused ${((freedAt - pausedAt) / 1000).toFixed(1)} s: "${paused.paused}"`, `chi started ${builtElsewhereWhilePaused} build(s) meanwhile`],
      }),
    };
  } catch (error) {
    if (error instanceof Error) error.message += `\n${farm.diagnostics()}`;
    throw error;
  } finally {
    if (fill !== undefined) freeDisk(fill);
    await farm.stop();
  }
}
