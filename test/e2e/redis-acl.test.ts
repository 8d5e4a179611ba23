import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { BULLMQ_PREFIX, redisAclLine, type DerivationView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { NIXFARM_BIN, spawnNixfarm, type RunningWorker } from '../harness/test-farm.js';
import { derivationClosure, freshSalt, invalidOutputsOf, layeredDag, nixInstantiate, outputPathsOf } from '../harness/nix-fixtures.js';
import { pollFor } from '../harness/poll.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'nixfarm-redis-acl-'));
const passwordFile = (role: string) => join(dir, `${role}.pw`);
const password = (role: string) => readFileSync(passwordFile(role), 'utf8').trim();
let port = 0;
let admin: Redis | undefined;
const urlOf = (user: string, secret: string) => `redis://${user}:${secret}@127.0.0.1:${port}`;

/** `nixfarm redis-acl`'s lines, as an operator would paste them into redis-cli, with more rules for one user when asked. */
async function applyAcl(more: Record<string, readonly string[]> = {}): Promise<void> {
  const { stdout } = await run(process.execPath, [
    NIXFARM_BIN,
    'redis-acl',
    '--coordinator-password-file',
    passwordFile('coordinator'),
    '--worker-password-file',
    passwordFile('worker'),
  ]);
  for (const line of stdout.trim().split('\n')) {
    const words = line.split(' ');
    await admin!.call(words[0]!, ...words.slice(1), ...(more[words[2]!] ?? []));
  }
}

/** A worker started with these `--redis` flags must end at start: its exit code, the time it took and its log. */
async function refusedWorker(start: () => Promise<RunningWorker>, expected: RegExp): Promise<{ code: number | null; ms: number; log: string }> {
  const started = Date.now();
  const worker = await start();
  const code = await new Promise<number | null>((resolve) => {
    if (worker.process.exitCode !== null) resolve(worker.process.exitCode);
    else worker.process.once('exit', (c) => resolve(c));
  });
  const ms = Date.now() - started;
  // The process has exited; its output reaches the log file through a pipe a moment later.
  const log = await pollFor(
    () => {
      const text = readFileSync(worker.logFile, 'utf8');
      return expected.test(text) ? text : undefined;
    },
    10_000,
    () => `the refusal in ${worker.logFile}:\n${readFileSync(worker.logFile, 'utf8')}`,
  );
  return { code, ms, log };
}

describe('Redis ACL users: the coordinator and the workers each with only their own', () => {
  after(() => admin?.disconnect());
  const farm = farmForSuite({
    workers: [
      { name: 'alpha', maxJobs: 2 },
      { name: 'beta', maxJobs: 2 },
    ],
    redisUsers: async (redis) => {
      port = Number(new URL(redis.url).port);
      admin = new Redis(redis.url);
      await applyAcl();
      // Nobody else may use the farm's Redis: the default user is what an unconfigured client gets.
      await admin.call('ACL', 'SETUSER', 'admin', 'on', '>admin-secret', '~*', '&*', '+@all');
      await admin.call('AUTH', 'admin', 'admin-secret');
      await admin.call('ACL', 'SETUSER', 'default', 'off');
      return { coordinator: urlOf('nixfarm-coordinator', password('coordinator')), worker: urlOf('nixfarm-worker', password('worker')) };
    },
  });

  it('builds a DAG with the users nixfarm redis-acl prints: each derivation once, outputs valid, all keys under the prefix', async () => {
    const dag = layeredDag({ layers: 3, width: 4 });
    const salt = freshSalt();
    const result = await farm.build([dag.file, ...dag.attrs.flatMap((a) => ['-A', a]), '--argstr', 'salt', salt]);
    assert.equal(result.exitCode, 0, `build failed:\n${result.stderr}\n${farm.diagnostics()}`);
    const [rootDrv] = await nixInstantiate(dag.file, dag.attrs, { salt });
    assert.deepEqual(result.stdout.trim().split('\n'), await outputPathsOf(rootDrv!));
    const drvs = await derivationClosure([rootDrv!]);
    assert.deepEqual(await invalidOutputsOf(drvs), [], 'every output is valid on the coordinator');
    const runId = /run (\w+)/.exec(result.stderr)?.[1];
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    assert.equal(derivations.length, drvs.length);
    for (const d of derivations) {
      assert.equal(d.status, 'succeeded', d.drvPath);
      assert.equal(d.attempts, 1, `${d.drvPath} built once`);
      assert.ok(d.worker === 'alpha' || d.worker === 'beta', `${d.drvPath} built on a worker`);
    }
    const keys = (await admin!.call('KEYS', '*')) as string[];
    assert.ok(
      keys.some((k) => k.startsWith(`${BULLMQ_PREFIX}:`)),
      "BullMQ's keys are under the prefix",
    );
    assert.deepEqual(
      keys.filter((k) => !k.startsWith('nixfarm:')),
      [],
      'every key is under nixfarm:',
    );
    assert.deepEqual(((await admin!.call('ACL', 'LOG')) as unknown[]).length, 0, 'no command of the farm was refused');
    // coordinator.json keeps the URL with the coordinator's password (for worker --join): its owner's alone
    assert.equal(statSync(join(farm.coordinatorStateDir, 'coordinator.json')).mode & 0o077, 0, 'coordinator.json is private');
  });

  it('the worker user cannot flush, list or read keys outside the prefix, nor publish outside it', async () => {
    const worker = new Redis(urlOf('nixfarm-worker', password('worker')), { maxRetriesPerRequest: 0 });
    try {
      await admin!.set('elsewhere', 'secret');
      await assert.rejects(worker.flushall(), /^ReplyError: NOPERM .*'flushall' command/);
      await assert.rejects(worker.flushdb(), /NOPERM .*'flushdb' command/);
      await assert.rejects(worker.keys('*'), /NOPERM .*'keys' command/);
      await assert.rejects(worker.config('GET', '*'), /NOPERM .*'config/);
      await assert.rejects(worker.get('elsewhere'), /NOPERM .*keys/);
      await assert.rejects(worker.set('bull:x:id', '1'), /NOPERM .*keys/);
      await assert.rejects(worker.eval("return redis.call('get', 'elsewhere')", 0), /can't access at least one of the keys/);
      await assert.rejects(worker.publish('elsewhere', 'x'), /NOPERM .*'publish' command/);
      await assert.rejects(worker.call('ACL', 'SETUSER', 'nixfarm-worker', '+@all'), /NOPERM .*'acl/);
      assert.equal(await admin!.get('elsewhere'), 'secret');
    } finally {
      worker.disconnect();
      await admin!.del('elsewhere');
    }
  });

  it('a worker whose user lacks XADD stops at start with one message naming it, not a retry loop', async () => {
    await admin!.call('ACL', 'SETUSER', 'worker-without-xadd', 'reset');
    const { stdout } = await run(process.execPath, [
      NIXFARM_BIN,
      'redis-acl',
      '--worker-user',
      'worker-without-xadd',
      '--coordinator-user',
      'unused-coordinator',
      '--coordinator-password-file',
      passwordFile('unused'),
      '--worker-password-file',
      passwordFile('worker'),
    ]);
    const line = stdout.trim().split('\n')[1]!.split(' ');
    await admin!.call(line[0]!, ...line.slice(1), '-xadd');
    const url = urlOf('worker-without-xadd', password('worker'));
    const { code, ms, log } = await refusedWorker(() => farm.startWorker({ name: 'no-xadd', extraArgs: ['--redis', url] }), /lacks the command xadd/);
    assert.equal(code, 2, log);
    assert.ok(ms < 60_000, `ended in ${ms} ms`);
    const said = log.split('\n').filter((l) => l.includes('lacks the command xadd'));
    assert.deepEqual(said, [
      `nixfarm: the Redis user "worker-without-xadd" at redis://worker-without-xadd:***@127.0.0.1:${port} lacks the command xadd; grant it (\`nixfarm redis-acl\` prints the users a farm needs) or use another user in the Redis URL`,
    ]);
    const { workers } = await farm.api<{ workers: Array<{ name: string }> }>('/api/workers');
    assert.ok(!workers.some((w) => w.name === 'no-xadd'), 'it never registered');
  });

  it('a worker with a wrong password stops at start with one message, not a retry loop', async () => {
    const url = urlOf('nixfarm-worker', 'not-the-password');
    const { code, ms, log } = await refusedWorker(() => farm.startWorker({ name: 'wrong-password', extraArgs: ['--redis', url] }), /WRONGPASS/);
    assert.equal(code, 2, log);
    assert.ok(ms < 60_000, `ended in ${ms} ms`);
    const said = log.split('\n').filter((l) => l.includes('WRONGPASS'));
    assert.equal(said.length, 1, log);
    assert.match(said[0]!, /^nixfarm: Redis at redis:\/\/nixfarm-worker:\*\*\*@127\.0\.0\.1:\d+ refused the connection: WRONGPASS/);
    assert.ok(!said[0]!.includes('not-the-password'), 'the password is not shown');
  });

  it('a worker whose user loses a permission while it runs stops with one message naming it, not a retry loop', async () => {
    const line = redisAclLine({ name: 'gamma-user', role: 'worker', password: 'gamma-secret' }, 'acl-setuser').split(' ');
    await admin!.call(line[0]!, ...line.slice(1));
    const worker = await farm.startWorker({ name: 'gamma', extraArgs: ['--redis', urlOf('gamma-user', 'gamma-secret')] });
    await farm.waitForWorkers(['gamma']);
    // Its idle poll takes jobs through BullMQ's moveToActive script, sent with EVALSHA.
    await admin!.call('ACL', 'SETUSER', 'gamma-user', '-evalsha');
    const { code, ms, log } = await refusedWorker(async () => worker, /lacks the command evalsha/);
    assert.equal(code, 2, log);
    assert.ok(ms < 30_000, `ended in ${ms} ms`);
    const said = log.split('\n').filter((l) => l.startsWith('nixfarm: '));
    assert.deepEqual(said, [
      `nixfarm: the Redis user "gamma-user" at redis://gamma-user:***@127.0.0.1:${port} lacks the command evalsha; grant it (\`nixfarm redis-acl\` prints the users a farm needs) or use another user in the Redis URL`,
    ]);
    assert.equal(log.split('\n').filter((l) => l.includes('fetching jobs failed; retrying')).length, 0, 'no retry loop');
  });

  it('a coordinator whose user lacks XREADGROUP stops at start with one message naming it', async () => {
    const line = redisAclLine({ name: 'coordinator-without-xreadgroup', role: 'coordinator', password: 'c-secret' }, 'acl-setuser').split(' ');
    await admin!.call(line[0]!, ...line.slice(1), '-xreadgroup');
    const { args, env } = farm.coordinatorCommand(undefined, { extraArgs: ['--redis', urlOf('coordinator-without-xreadgroup', 'c-secret')] });
    const started = Date.now();
    const refused = await spawnNixfarm(args, { env, timeoutMs: 60_000 }).result;
    assert.equal(refused.exitCode, 2, refused.stderr);
    assert.ok(Date.now() - started < 60_000);
    assert.deepEqual(
      refused.stderr.split('\n').filter((l) => l.startsWith('nixfarm: ')),
      [
        `nixfarm: the Redis user "coordinator-without-xreadgroup" at redis://coordinator-without-xreadgroup:***@127.0.0.1:${port} lacks the command xreadgroup; grant it (\`nixfarm redis-acl\` prints the users a farm needs) or use another user in the Redis URL`,
      ],
    );
    assert.ok(!refused.stderr.includes('c-secret'), 'the password is not shown');
  });

  it('the farm goes on building after the refused workers', async () => {
    const dag = layeredDag({ layers: 2, width: 2 });
    const result = await farm.build([dag.file, ...dag.attrs.flatMap((a) => ['-A', a]), '--argstr', 'salt', freshSalt()]);
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
  });
});
