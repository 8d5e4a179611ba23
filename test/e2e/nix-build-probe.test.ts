import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import {
  BULLMQ_PREFIX,
  NixSetupError,
  localStorePool,
  probeNixBuild,
  type ServePool,
  type DerivationView,
  type QueueSummary,
  type WorkerListing,
} from '@nixfarm/shared';
import { spawnNixfarm, type RunningCommand } from '../harness/test-farm.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { chain, freshSalt } from '../harness/nix-fixtures.js';
import { pollFor } from '../harness/poll.js';
import { auditRun } from '../chaos/run-audit.js';

/**
 * A Nix that cannot build (here: the build-users group it is told to use
 * does not exist, as on a fresh Debian machine without Nix's build users)
 * stops the coordinator and the worker at start, with one message naming
 * which Nix, quoting Nix and giving the fix, before either touches Redis:
 * nothing queued is lost, and a correct start carries on with it.
 */

const NO_GROUP = 'nixfarm-no-such-group';
const BAD_NIX = `build-users-group = ${NO_GROUP}`;
const NIX_SAYS = `error: the group '${NO_GROUP}' specified in 'build-users-group' does not exist`;
const quiet = pino({ level: 'silent' });
/** statuses of a derivation whose job waits in its queue (unsupported: while no live worker could take it) */
const WAITING = ['queued', 'unsupported'];

/** The lines a person reads on stderr: the CLI's own, without the JSON log lines. */
function humanLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
}

/** The fix lines for a missing group, as the CLI prints them under `  fix: `. */
function buildUsersFixLines(): string[] {
  return [
    "  fix: create Nix's build users as root (`node scripts/ensure-machine.mjs`, run by `npm run demo`, does this):",
    `         groupadd --system ${NO_GROUP}`,
    `         for i in $(seq 1 32); do useradd --system --gid ${NO_GROUP} --groups ${NO_GROUP} --no-user-group --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin ${NO_GROUP}$i; done`,
    '       or build without build users: `build-users-group =` in nix.conf',
  ];
}

/** Every key in Redis with its serialised value: two equal snapshots mean nothing was written, queued or dropped. */
async function redisSnapshot(url: string): Promise<Map<string, string>> {
  const redis = new Redis(url, { lazyConnect: true });
  await redis.connect();
  try {
    const keys = (await redis.keys('*')).sort();
    const snapshot = new Map<string, string>();
    for (const key of keys) snapshot.set(key, (await redis.dumpBuffer(key))?.toString('base64') ?? '(gone)');
    return snapshot;
  } finally {
    redis.disconnect();
  }
}

describe('probeNixBuild on the host store', () => {
  let store: ServePool;
  before(() => {
    store = localStorePool({
      nixOptions: [
        ['sandbox', 'true'],
        ['substituters', ''],
      ],
      write: true,
      maxIdle: 1,
    });
  });
  after(async () => {
    await store?.close();
  });

  it('builds a trivial derivation sandboxed in well under a second, and leaves nothing in the store', async () => {
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { ms, path } = await probeNixBuild({ store, nix: 'the host Nix', nixOptions: [['sandbox', 'true']], logger: quiet });
      times.push(ms);
      assert.match(path, /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-nixfarm-build-probe$/);
      assert.ok(!existsSync(path), `${path} was deleted`);
      assert.ok(!existsSync(`${path}.lock`), 'and its lock file');
    }
    process.stderr.write(`probe times: ${times.join(', ')} ms\n`);
    // aimed at < 300 ms; the bound leaves room for a machine shared with other test runs
    assert.ok(Math.min(...times) < 1000, `probe times ${times.join(', ')} ms`);
  });

  it("fails with NixSetupError when Nix's build users are missing: which Nix, Nix's words, the fix, and nothing left behind", async () => {
    const env = { NIX_CONFIG: `substituters =\n${BAD_NIX}` };
    const broken = localStorePool({ nixOptions: [['sandbox', 'true']], env, write: true, maxIdle: 1 });
    try {
      await assert.rejects(
        probeNixBuild({ store: broken, nix: 'the host Nix', env, logger: quiet, alternative: 'or use another machine' }),
        (error: unknown) => {
          assert.ok(error instanceof NixSetupError, String(error));
          assert.equal(error.code, 'nix-build-users-missing');
          assert.equal(error.retryable, false);
          assert.equal(error.nixMessage, NIX_SAYS);
          assert.deepEqual(error.message.split('\n'), [
            `the host Nix cannot build (checked at start with a trivial build): ${NIX_SAYS}`,
            ...buildUsersFixLines(),
            '       or use another machine',
          ]);
          const probePath = String(error.details?.probePath);
          assert.ok(!existsSync(probePath) && !existsSync(`${probePath}.lock`), `nothing left at ${probePath}`);
          return true;
        },
      );
    } finally {
      await broken.close();
    }
  });
});

describe('start-up: a Nix that cannot build refuses the start and loses nothing', () => {
  const farm = farmForSuite({ workers: [] });

  /**
   * A run of `chain(length)` submitted through the real CLI, followed until
   * its bottom link is queued; with no live worker the views call it
   * unsupported, but its job waits in its queue all the same.
   */
  async function queuedRun(length: number): Promise<{ build: RunningCommand; runId: string; rows: () => Promise<DerivationView[]> }> {
    const { build, runId, rows } = await farm.submitInBackground([chain(length).file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    await pollFor(
      async () => (await rows()).some((r) => r.name === 'link-0' && WAITING.includes(r.status)),
      30_000,
      () => 'link-0 to be queued',
    );
    return { build, runId, rows };
  }

  async function waitingIn(queue: string): Promise<number> {
    const { queues } = await farm.api<{ queues: QueueSummary[] }>('/api/queues');
    return queues.find((q) => q.name === queue)?.waiting ?? 0;
  }

  it('nixfarm worker exits 2 with the message naming its Nix and the fix; the job waiting in its queue stays waiting and builds on a worker that can', async () => {
    const { build, runId, rows } = await queuedRun(1);
    const queue = (await farm.api<{ queues: QueueSummary[] }>('/api/queues')).queues.find((q) => q.waiting > 0)?.name;
    assert.ok(queue !== undefined, 'a queue holds the job');
    assert.equal(await waitingIn(queue), 1);

    const refused = await farm.startWorker({ name: 'nobuild', nixConfig: [BAD_NIX] });
    const exitCode = await new Promise<number | null>((resolve) =>
      refused.process.exitCode !== null ? resolve(refused.process.exitCode) : refused.process.once('exit', resolve),
    );
    assert.equal(exitCode, 2, farm.tail('nobuild'));
    await pollFor(
      () => existsSync(refused.logFile) && readFileSync(refused.logFile, 'utf8').includes('fix:'),
      5000,
      () => 'the log to be written',
    );
    const log = readFileSync(refused.logFile, 'utf8');
    assert.deepEqual(humanLines(log), [
      `nixfarm: worker nobuild's Nix cannot build (checked at start with a trivial build): ${NIX_SAYS}`,
      ...buildUsersFixLines(),
    ]);
    assert.doesNotMatch(log, /\n\s+at /, 'no stack trace');

    const { workers } = await farm.api<{ workers: WorkerListing[] }>('/api/workers');
    assert.ok(!workers.some((w) => w.name === 'nobuild'), 'it never registered');
    const [link] = await rows();
    assert.ok(WAITING.includes(link?.status ?? ''), `never taken: ${link?.status}`);
    assert.equal(link?.attempts, 0);
    assert.equal(await waitingIn(queue), 1, 'still waiting in its queue');

    // The same machine kind with Nix's build users (the farm's `build-users-group =`) builds it.
    await farm.startWorker({ name: 'canbuild' });
    const result = await build.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    assert.deepEqual(
      (await rows()).map((r) => [r.status, r.worker, r.attempts]),
      [['succeeded', 'canbuild', 1]],
    );
    assert.deepEqual((await auditRun(farm, runId)).lost, []);
    assert.equal(await farm.stopWorker('canbuild'), 0);
  });

  it('nixfarm coordinator exits 2 with the message naming its Nix, the fix and --no-local-builds; Redis is untouched; with --no-local-builds it starts and the run completes', async () => {
    const { build, runId, rows } = await queuedRun(2);
    const ports = farm.coordinatorPorts();
    const previousPid = farm.address.pid;
    await farm.killCoordinator('SIGTERM');
    const before = await redisSnapshot(farm.redis.url);
    assert.ok(
      [...before.keys()].some((k) => k.startsWith(`${BULLMQ_PREFIX}:`)),
      'queued jobs are in Redis',
    );

    const { args, env } = farm.coordinatorCommand(ports, { nixConfig: [BAD_NIX] });
    const started = Date.now();
    const refused = await spawnNixfarm(args, { env, timeoutMs: 60_000 }).result;
    const took = Date.now() - started;
    assert.equal(refused.exitCode, 2, refused.stderr);
    assert.deepEqual(humanLines(refused.stderr), [
      `nixfarm: the coordinator's Nix cannot build (checked at start with a trivial build): ${NIX_SAYS}`,
      ...buildUsersFixLines(),
      '       or start the coordinator with --no-local-builds (workers then build preferLocalBuild derivations too)',
    ]);
    assert.doesNotMatch(refused.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(refused.stdout, '');
    assert.ok(took < 30_000, `refused after ${took} ms`);
    assert.deepEqual(await redisSnapshot(farm.redis.url), before, 'not one key written, queued or dropped');
    const address = JSON.parse(readFileSync(join(farm.coordinatorStateDir, 'coordinator.json'), 'utf8')) as { pid: number };
    assert.equal(address.pid, previousPid, 'the refused coordinator never announced itself');

    // The same broken Nix, but nothing to build here: it starts, resumes the run, and the run completes on a worker.
    await farm.startCoordinator(ports, { nixConfig: [BAD_NIX], extraArgs: ['--no-local-builds'] });
    assert.notEqual(farm.address.pid, previousPid);
    const [bottom] = (await rows()).filter((r) => r.name === 'link-0');
    assert.ok(WAITING.includes(bottom?.status ?? ''), `the run resumed where it was: ${bottom?.status}`);
    assert.equal(bottom?.attempts, 0);
    await farm.startWorker({ name: 'after-restart' });
    const result = await build.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    assert.deepEqual((await rows()).map((r) => [r.name, r.status, r.worker, r.attempts]).sort(), [
      ['link-0', 'succeeded', 'after-restart', 1],
      ['link-1', 'succeeded', 'after-restart', 1],
    ]);
    assert.deepEqual((await auditRun(farm, runId)).lost, []);
  });
});
