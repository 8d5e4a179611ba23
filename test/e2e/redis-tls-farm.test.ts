import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { DerivationView, RunView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { spawnNixfarm } from '../harness/test-farm.js';
import { derivationClosure, freshSalt, layeredDag, nixInstantiate, outputPathsOf } from '../harness/nix-fixtures.js';

/**
 * A whole farm over TLS: redis-server speaks only TLS (--tls-port, plain port
 * off) with a CA the test makes and requires client certificates; the
 * coordinator (--redis rediss://, --redis-ca, --redis-cert, --redis-key) and
 * two workers in simulated machines (--join brings the URL and the CA, each
 * gives its client certificate; the CA is the farm's, made with openssl) build a small DAG through it.
 */
describe('a farm whose Redis speaks only TLS, with client certificates', () => {
  const farm = farmForSuite({ workers: [{ name: 'tls-alpha' }, { name: 'tls-beta' }], redisTls: true });

  it('builds a DAG on both workers over rediss://, outputs valid on the coordinator, the run succeeded', async () => {
    assert.match(farm.redis.url, /^rediss:\/\/127\.0\.0\.1:\d+$/);
    const coordinatorFile = JSON.parse(readFileSync(join(farm.coordinatorStateDir, 'coordinator.json'), 'utf8')) as { redisUrl: string; redisCaFile?: string };
    assert.equal(coordinatorFile.redisUrl, farm.redis.url);
    assert.equal(coordinatorFile.redisCaFile, farm.redisTls?.caCert, 'coordinator.json names the CA, for worker --join');

    const dag = layeredDag({ layers: 3, width: 3 });
    const salt = freshSalt();
    const result = await farm.build([dag.file, ...dag.attrs.flatMap((a) => ['-A', a]), '--argstr', 'salt', salt]);
    assert.equal(result.exitCode, 0, `build failed:\n${result.stderr}\n${farm.diagnostics()}`);

    const [rootDrv] = await nixInstantiate(dag.file, dag.attrs, { salt });
    const drvs = await derivationClosure([rootDrv!]);
    const outputs = (await Promise.all(drvs.map((d) => outputPathsOf(d)))).flat();
    const check = spawnSync('nix-store', ['--check-validity', '--print-invalid', ...outputs], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr);
    assert.equal(check.stdout.trim(), '', 'every output is valid in the coordinator store');

    const runId = /run (\w+)/.exec(result.stderr)?.[1];
    assert.ok(runId, 'the CLI names the run');
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    assert.equal(run.status, 'succeeded');
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    assert.equal(derivations.length, dag.expectedDrvCount);
    for (const d of derivations) assert.equal(d.status, 'succeeded', d.drvPath);
    assert.deepEqual(new Set(derivations.map((d) => d.worker)), new Set(['tls-alpha', 'tls-beta']), 'both workers built over TLS');
  });

  /** `nixfarm worker --join` the farm's coordinator with more flags, on the host, as an authorised worker; it must end by itself. */
  async function workerExit(name: string, flags: readonly string[]): Promise<{ exitCode: number | null; stderr: string; ms: number }> {
    const stateDir = join(farm.dir, name);
    const key = await farm.cli(['worker-key', '--state-dir', stateDir]);
    assert.equal((await farm.cli(['authorize', '--state-dir', farm.coordinatorStateDir, key.stdout.trim()])).exitCode, 0);
    const started = Date.now();
    const args = ['worker', '--join', farm.coordinatorStateDir, '--name', name, '--state-dir', stateDir, '--log-level', 'silent', ...flags];
    // A worker that retried instead would never exit: it is killed at the timeout, and its exit code is null, not 2.
    const result = await spawnNixfarm(args, { timeoutMs: 90_000 }).result;
    return { ...result, ms: Date.now() - started };
  }

  it('a worker given a plain redis:// URL to the TLS port exits at once with one message: use rediss://', async () => {
    const port = new URL(farm.redis.url).port;
    const result = await workerExit('tls-plain', ['--redis', `redis://127.0.0.1:${port}`]);
    assert.equal(result.exitCode, 2, result.stderr);
    assert.equal(
      result.stderr,
      `nixfarm: the server at redis://127.0.0.1:${port} speaks TLS and closed the plain connection: use rediss://127.0.0.1:${port} (--redis), with --redis-ca FILE for its CA\n`,
    );
    // the worker's own start (its Nix, the SSH endpoint) comes first: seconds on a busy machine, never a wait for Redis
    assert.ok(result.ms < 45_000, `took ${result.ms} ms`);
  });

  it('a worker without a client certificate exits at once with one message naming --redis-cert and --redis-key', async () => {
    const result = await workerExit('tls-no-cert', []);
    assert.equal(result.exitCode, 2, result.stderr);
    assert.match(
      result.stderr,
      /^nixfarm: the Redis server at rediss:\/\/127\.0\.0\.1:\d+ requires a client certificate and none was given .*: give --redis-cert FILE and --redis-key FILE.*\n$/,
    );
    assert.equal(result.stderr.split('\n').length, 2, 'one line');
  });

  it('a client certificate without its key is refused before anything starts, naming both flags', async () => {
    const result = await workerExit('tls-half', ['--redis-cert', farm.redisTls!.client.cert]);
    assert.equal(result.exitCode, 2);
    assert.match(
      result.stderr,
      /^nixfarm: --redis-cert and --redis-key go together \(a client certificate and its private key\); only --redis-cert \S+client\.crt was given\n$/,
    );
  });
});
