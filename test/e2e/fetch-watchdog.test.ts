import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { WorkerListing } from '@nixfarm/shared';
import { TestFarm } from '../harness/test-farm.js';
import { TcpProxy } from '../harness/tcp-proxy.js';
import { pollFor } from '../harness/poll.js';
import { sleepyDag } from '../chaos/chaos-fixtures.js';
import { runEnded, startBuild } from '../chaos/scenario-steps.js';
import { auditRun } from '../chaos/run-audit.js';

/**
 * The stall BullMQ users see after some failovers, made for real: the
 * worker's fetch connection (and only it) goes silent, its socket open,
 * through a relay that stops forwarding. Jobs wait, the worker has free
 * slots, nothing is fetched: the watchdog must restart the fetch loop on a
 * new connection, and the builds must be done.
 */
describe('the fetch watchdog (real farm)', () => {
  it('restarts a fetch loop whose connection went silent while jobs wait, and the run is built', async () => {
    let proxy: TcpProxy | undefined;
    const farm = await TestFarm.start({ workers: [] });
    try {
      proxy = await TcpProxy.start({ targetPort: farm.redis.port });
      await farm.startWorker({
        name: 'w1',
        maxJobs: 2,
        extraArgs: ['--redis', `redis://127.0.0.1:${proxy.port}`, '--fetch-watchdog-seconds', '3'],
      });
      await farm.waitForWorkers(['w1']);
      // A first run: the queue exists and the worker fetches from it (every second while idle), so its fetch connection is open.
      const warmUp = await startBuild(farm, sleepyDag({ layers: 1, width: 1, sleepSeconds: 0 }));
      assert.equal(await runEnded(farm, warmUp.runId, 120_000), 'succeeded');
      assert.equal(proxy.freezeOpen('nixfarm-fetch-w1'), 1, 'the fetch connection of w1, and only it, is frozen');
      const frozenAt = Date.now();
      const fixture = sleepyDag({ layers: 2, width: 2, sleepSeconds: 0.2 });
      const build = await startBuild(farm, fixture);
      const status = await runEnded(farm, build.runId, 120_000);
      assert.equal(status, 'succeeded');
      assert.equal((await build.result).exitCode, 0);
      const audit = await auditRun(farm, build.runId);
      assert.deepEqual(audit.lost, []);
      assert.equal(audit.derivations, fixture.derivations);

      const log = readFileSync(farm.workers.get('w1')!.logFile, 'utf8');
      const stalls = log.split('\n').filter((l) => l.includes('fetch loop stalled'));
      assert.equal(stalls.length, 1, `one restart:\n${stalls.join('\n')}`);
      const stall = JSON.parse(stalls[0]!) as { time: number; stalledSeconds: number; waiting: Record<string, number>; restarts: number };
      assert.ok(stall.stalledSeconds >= 3, `stalled ${stall.stalledSeconds} s`);
      assert.ok(
        Object.values(stall.waiting).some((n) => n > 0),
        'the facts name the waiting jobs',
      );
      assert.ok(stall.time - frozenAt < 15_000, 'noticed within the bound (3 s + a check interval + the build submission)');
      // the old connection is closed once it leaves a PING unanswered for 2 s: maybe after the run ended
      await pollFor(
        async () => /the stalled fetch connection does not answer PING; closing it/.test(readFileSync(farm.workers.get('w1')!.logFile, 'utf8')) || undefined,
        10_000,
        () => 'w1 to close the silent connection',
      );

      const restarts = await pollFor(
        async () => {
          const { workers } = await farm.api<{ workers: WorkerListing[] }>('/api/workers');
          return workers.find((w) => w.name === 'w1')?.fetchRestarts;
        },
        10_000,
        () => 'w1 to advertise its restart',
      );
      assert.equal(restarts, 1);
      const metrics = await (await fetch(new URL('/metrics', farm.address.httpUrl), { headers: farm.authHeaders('read') })).text();
      assert.match(metrics, /nixfarm_worker_fetch_restarts\{worker="w1"\} 1/);
    } finally {
      await farm.stop();
      await proxy?.close();
    }
  });
});
