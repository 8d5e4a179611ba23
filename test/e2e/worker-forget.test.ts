import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DashboardSnapshot, WorkerListing } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { pollFor } from '../harness/poll.js';
import { signalWorker, workerExit } from '../harness/worker-signals.js';

describe('forgetting a gone worker (nixfarm workers --forget)', () => {
  const farm = farmForSuite({ workers: [{ name: 'keeper' }] });

  const listed = async (): Promise<WorkerListing[]> => (await farm.api<{ workers: WorkerListing[] }>('/api/workers')).workers;
  const metrics = async (): Promise<string> => {
    const response = await fetch(new URL('/metrics', farm.address.httpUrl), { headers: farm.authHeaders('read') });
    assert.equal(response.status, 200);
    return response.text();
  };

  it('refuses a live worker, an unknown name and a read token; forgets a killed one from the listing, /metrics and the dashboard; a return registers it again', async () => {
    await farm.startWorker({ name: 'lost' });
    await farm.waitForWorkers(['lost']);
    signalWorker(farm, 'lost', 'SIGKILL');
    assert.equal(await workerExit(farm, 'lost', 10_000), null, 'killed by the signal');

    // A fresh heartbeat is refused, whether the worker runs (keeper) or was killed moments ago (lost): exit 2 with what to do.
    for (const name of ['keeper', 'lost']) {
      const refused = await farm.cli(['workers', '--forget', name]);
      assert.equal(refused.exitCode, 2, refused.stderr);
      assert.match(
        refused.stderr,
        new RegExp(`409 \\(worker-alive\\): worker "${name}" is alive \\(last heartbeat [\\d.]+ s ago, under the 15 s limit\\).*SIGTERM`),
      );
    }
    const unknown = await farm.cli(['workers', '--forget', 'nosuch']);
    assert.equal(unknown.exitCode, 2, unknown.stderr);
    assert.match(unknown.stderr, /404 \(worker-not-found\): no worker named "nosuch" is registered; registered: keeper, lost/);
    const readOnly = await fetch(new URL('/api/workers/lost', farm.address.httpUrl), { method: 'DELETE', headers: farm.authHeaders('read') });
    assert.equal(readOnly.status, 403);
    assert.match(await readOnly.text(), /DELETE \/api\/workers\/:name needs a token with the admin scope/);

    // Once its heartbeat is stale it shows as down, and the alert's series says so.
    await pollFor(
      async () => (await listed()).find((w) => w.name === 'lost' && !w.alive),
      30_000,
      () => 'lost to show as down',
    );
    assert.match(await metrics(), /^nixfarm_worker_up\{worker="lost"\} 0$/m);

    const forgotten = await farm.cli(['workers', '--forget', 'lost']);
    assert.equal(forgotten.exitCode, 0, forgotten.stderr);
    assert.match(forgotten.stdout, /^forgot worker lost \(last heartbeat \d+ s ago, 0 build\(s\) running as of then\)/);
    assert.deepEqual(
      (await listed()).map((w) => w.name),
      ['keeper'],
    );
    const text = await metrics();
    assert.doesNotMatch(text, /worker="lost"/, 'no series of the forgotten worker is left');
    assert.match(text, /^nixfarm_worker_up\{worker="keeper"\} 1$/m);
    const dashboard = await farm.api<DashboardSnapshot>('/api/dashboard');
    assert.deepEqual(
      dashboard.workers.map((w) => w.name),
      ['keeper'],
    );
    const again = await farm.cli(['workers', '--forget', 'lost']);
    assert.equal(again.exitCode, 2, again.stderr);
    assert.match(again.stderr, /404 \(worker-not-found\): no worker named "lost" is registered; registered: keeper/);

    // The name stays bound to its key: the same worker coming back registers again with its next heartbeat.
    farm.restartWorker('lost');
    await farm.waitForWorkers(['lost']);
    assert.deepEqual(
      (await listed()).map((w) => w.name),
      ['keeper', 'lost'],
    );
  });
});
