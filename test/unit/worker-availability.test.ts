import ssh2 from 'ssh2';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { ReportSigner, createLogger, redisKeys, takesNewBuilds, workerConfigSchema, workerInfoSchema, type WorkerEvent } from '@nixfarm/shared';
import { explainDerivation, formatExplanation, judgeWorkers } from '@nixfarm/coordinator';
import { DiskFloor, HandBackPublisher, HandBackRegistry, PlacementGate } from '@nixfarm/worker';
import { DRV, NOW, nodeFacts, workerFacts } from '../harness/explanation-facts.js';

const MiB = 1024 * 1024;
const logger = createLogger({ name: 'test', level: 'silent' });

const worker = workerFacts;
const node = nodeFacts;

const SIGNER = ReportSigner.fromPrivateKey(ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256 }).private);

describe('worker config and listing: drain and disk floor', () => {
  it('defaults to a 300 s drain and a 1024 MiB floor, and rejects values out of range', () => {
    const base = {
      name: 'w1',
      redisUrl: 'redis://x:1',
      coordinatorHost: 'h',
      coordinatorHostKey: 'ssh-ed25519 AAAA',
      stateDir: '/s',
      systems: ['x86_64-linux'],
    };
    const config = workerConfigSchema.parse(base);
    assert.equal(config.drainSeconds, 300);
    assert.equal(config.minFreeDiskMiB, 1024);
    assert.equal(workerConfigSchema.safeParse({ ...base, drainSeconds: 86_401 }).success, false);
    assert.equal(workerConfigSchema.safeParse({ ...base, drainSeconds: -1 }).success, false);
    assert.equal(workerConfigSchema.safeParse({ ...base, minFreeDiskMiB: 1.5 }).success, false);
    assert.equal(workerConfigSchema.parse({ ...base, drainSeconds: 0, minFreeDiskMiB: 0 }).minFreeDiskMiB, 0);
  });

  it('parses heartbeats written before draining and disk space were advertised', () => {
    const old = {
      name: 'w1',
      systems: ['x86_64-linux'],
      supportedFeatures: [],
      mandatoryFeatures: [],
      maxJobs: 1,
      speedFactor: 1,
      running: 0,
      heartbeatAt: 1,
      startedAt: 1,
      host: 'h',
      publicKeyFingerprint: 'SHA256:x',
      nixVersion: '2.8.0',
    };
    const parsed = workerInfoSchema.parse(old);
    assert.equal(takesNewBuilds(parsed), true);
    assert.equal(takesNewBuilds({ draining: true }), false);
    assert.equal(takesNewBuilds({ paused: 'low on disk' }), false);
  });
});

describe('DiskFloor', () => {
  it('pauses below the floor with a reason naming the numbers and the flag, and resumes above it', async () => {
    let free = 100 * MiB;
    const floor = new DiskFloor({ path: '/nix/store', minFreeBytes: 64 * MiB, setting: '--min-free-disk', logger, freeBytes: async () => free });
    assert.deepEqual(await floor.check(), { freeBytes: 100 * MiB, paused: undefined });
    free = 20 * MiB;
    assert.deepEqual(await floor.check(), { freeBytes: 20 * MiB, paused: 'free space on /nix/store is 20 MiB, below the floor of 64 MiB (--min-free-disk)' });
    free = 10 * MiB;
    assert.equal((await floor.check()).paused, 'free space on /nix/store is 10 MiB, below the floor of 64 MiB (--min-free-disk)');
    free = 64 * MiB;
    assert.deepEqual(await floor.check(), { freeBytes: 64 * MiB, paused: undefined });
  });

  it('never pauses with a floor of 0, and keeps its last state when the filesystem cannot be read', async () => {
    const none = new DiskFloor({ path: '/nix/store', minFreeBytes: 0, logger, freeBytes: async () => 0 });
    assert.equal((await none.check()).paused, undefined);
    let fail = false;
    const floor = new DiskFloor({ path: '/nix/store', minFreeBytes: MiB, logger, freeBytes: async () => (fail ? Promise.reject(new Error('EIO')) : 0) });
    const paused = await floor.check();
    assert.ok(paused.paused !== undefined);
    fail = true;
    assert.deepEqual(await floor.check(), paused);
  });

  it('measures the nearest existing directory of a store Nix has not created yet', async () => {
    const floor = new DiskFloor({ path: '/nonexistent-nixfarm/nix/store', minFreeBytes: 1, logger });
    const state = await floor.check();
    assert.ok(state.freeBytes !== undefined && state.freeBytes > 0);
  });
});

describe('hand-back reports', () => {
  function publisher(): { registry: HandBackRegistry; publisher: HandBackPublisher; sent: WorkerEvent[] } {
    const sent: WorkerEvent[] = [];
    const redis = { xadd: async (...args: string[]) => void sent.push(JSON.parse(args[args.indexOf('e') + 1]!) as WorkerEvent) } as unknown as Redis;
    const registry = new HandBackRegistry();
    return { registry, publisher: new HandBackPublisher(redis, SIGNER, registry), sent };
  }
  const finished = (jobId: string, outcome: 'cancelled' | 'aborted' | 'succeeded'): WorkerEvent => ({
    type: 'finished',
    drvPath: DRV,
    worker: 'w1',
    jobId,
    attempt: 0,
    outcome,
    logTail: [],
    timings: { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 },
    at: NOW,
  });

  it('turns the interrupted report of a build being handed back into a handed-back event, and the job goes back', async () => {
    const { registry, publisher: p, sent } = publisher();
    registry.request('j1', 'worker w1 was told to leave now');
    await p.publish(finished('j1', 'cancelled'));
    assert.deepEqual(sent, [{ type: 'handed-back', drvPath: DRV, worker: 'w1', jobId: 'j1', attempt: 0, reason: 'worker w1 was told to leave now', at: NOW }]);
    assert.equal(registry.total, 1);
    assert.equal(registry.take('j1'), true);
    assert.equal(registry.take('j1'), false);
  });

  it('reports a build that got to its end anyway, and builds nobody asked back, as usual', async () => {
    const { registry, publisher: p, sent } = publisher();
    registry.request('j1', 'leaving');
    await p.publish(finished('j1', 'succeeded'));
    await p.publish(finished('j2', 'cancelled'));
    assert.deepEqual(
      sent.map((e) => [e.type, e.jobId]),
      [
        ['finished', 'j1'],
        ['finished', 'j2'],
      ],
    );
    assert.equal(registry.take('j1'), false);
  });
});

describe('placement and explanations with draining and paused workers', () => {
  it('does not yield to a better-placed worker that drains or is paused', async () => {
    const listing = (name: string, extra: Record<string, unknown>) =>
      JSON.stringify({
        name,
        systems: ['x86_64-linux'],
        supportedFeatures: [],
        mandatoryFeatures: [],
        maxJobs: 4,
        speedFactor: 10,
        running: 0,
        heartbeatAt: Date.now(),
        startedAt: 1,
        host: 'h',
        publicKeyFingerprint: 'f',
        nixVersion: '2.8',
        ...extra,
      });
    const redis = {
      smembers: async (key: string) => (key === redisKeys.workers ? ['drainer', 'pauser'] : []),
      mget: async () => [listing('drainer', { draining: true }), listing('pauser', { paused: 'low on disk' })],
    } as unknown as Redis;
    const gate = new PlacementGate({ redis, self: () => ({ name: 'slow', running: 0, maxJobs: 1, speedFactor: 1 }) });
    assert.deepEqual(await gate.decide('build@x86_64-linux', async () => ['j1']), { take: true, yieldTo: [] });
  });

  it('says a draining worker takes no new builds and a paused one why', () => {
    const verdicts = judgeWorkers(
      { system: 'x86_64-linux', requiredFeatures: [] },
      [
        worker('leaving', { draining: true, running: 1, maxJobs: 2 }),
        worker('full', { paused: 'free space on /nix/store is 10 MiB, below the floor of 64 MiB (--min-free-disk)' }),
        worker('busy', { running: 1 }),
      ],
      NOW,
    );
    assert.deepEqual(
      verdicts.map((v) => [v.name, v.verdict]),
      [
        ['busy', 'busy'],
        ['full', 'paused'],
        ['leaving', 'draining'],
      ],
    );
    assert.match(verdicts[1]!.reason, /^paused: takes no new builds until it resumes by itself: free space on \/nix\/store is 10 MiB/);
    assert.match(verdicts[2]!.reason, /^draining: it is leaving and takes no new builds/);
  });

  it('explains a queued derivation that only a paused worker could take', () => {
    const e = explainDerivation({
      node: node(),
      workers: [worker('full', { paused: 'free space on /nix/store is 10 MiB, below the floor of 64 MiB (--min-free-disk)' })],
      now: NOW,
    });
    assert.equal(
      e.summary,
      'ready, waiting: no capable live worker takes new builds now (full paused: takes no new builds until it resumes by itself: free space on /nix/store is 10 MiB, below the floor of 64 MiB (--min-free-disk)); a paused worker resumes by itself, a draining one is leaving: start another worker if none comes back',
    );
    const mixed = explainDerivation({ node: node(), workers: [worker('busy', { running: 1 }), worker('leaving', { draining: true })], now: NOW });
    assert.match(mixed.summary, /^ready, waiting for a free slot: every capable live worker is busy or takes no new builds \(busy 1\/1, leaving draining: /);
  });

  it('notes a hand-back on a queued derivation, and a draining worker on a running one', () => {
    const queued = explainDerivation({
      node: node({ handedBack: { worker: 'w1', reason: 'worker w1 was told to leave now', at: NOW - 5000 } }),
      workers: [worker('w2', { running: 1 })],
      now: NOW,
    });
    assert.ok(
      queued.notes.includes(
        `handed back unfinished by w1 at ${new Date(NOW - 5000).toISOString()} (worker w1 was told to leave now); queued again for another worker, the try not counted`,
      ),
    );
    const running = explainDerivation({
      node: node({ status: 'running', worker: 'w1', startedAt: NOW - 2000, attempts: 1 }),
      workers: [worker('w1', { draining: true, running: 1 })],
      now: NOW,
    });
    assert.match(
      formatExplanation(running),
      /Note: w1 is draining: it finishes this build within its drain timeout, or hands it back to the queue for another worker/,
    );
  });
});
