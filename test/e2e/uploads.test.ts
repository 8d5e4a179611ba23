import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { hashPart, type DashboardSnapshot, type RunView, type UploadRecord } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { runIdOf } from '../harness/build-timeline.js';
import { chain, freshSalt } from '../harness/nix-fixtures.js';
import { pollFor } from '../harness/poll.js';
import { onProcessExit, removeTreeSync } from '../harness/process-cleanup.js';
import { SimulatedMachine } from '../harness/simulated-machine.js';
import { HttpCacheServer } from '../harness/http-cache-server.js';
import { S3CacheServer, S3RVER_CREDENTIALS } from '../harness/s3-cache-server.js';

const exec = promisify(execFile);

/** A signing key pair as `nix-store --generate-binary-cache-key` makes it: the secret key's file and the public key's line. */
async function signingKey(dir: string, name: string): Promise<{ secretFile: string; publicKey: string }> {
  const secretFile = join(dir, `${name}.sec`);
  const publicFile = join(dir, `${name}.pub`);
  await exec('nix-store', ['--generate-binary-cache-key', name, secretFile, publicFile]);
  return { secretFile, publicKey: readFileSync(publicFile, 'utf8').trim() };
}

/**
 * Uploads to external caches on a real farm: a file:// directory, a small
 * HTTP cache taking PUTs (as Nix uploads) and a local S3 server (s3rver,
 * through the AWS SDK). Each is checked the way a user would: a machine with
 * its own empty store substitutes the outputs from it with signatures
 * required, and builds nothing.
 */
describe('uploads to external caches (real farm)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-uploads-'));
  onProcessExit(() => removeTreeSync(dir));
  let http: HttpCacheServer;
  let s3: S3CacheServer;
  const fileCache = join(dir, 'file-cache');
  /** filled in by the hook below, read when the farm starts */
  const coordinatorArgs: string[] = [];
  const machines: SimulatedMachine[] = [];

  // Registered before the farm's hook: the caches exist when the coordinator starts with --push-to.
  before(async () => {
    http = await HttpCacheServer.start();
    s3 = await S3CacheServer.start();
    Object.assign(process.env, S3RVER_CREDENTIALS);
    // No key here: what the caches get carries the signature the coordinator put on every farm output in its store.
    coordinatorArgs.push('--push-to', `file://${fileCache}`, '--push-to', http.url, '--push-to', s3.pushUrl);
  });
  const farm = farmForSuite({ workers: [{ name: 'w1', maxJobs: 2 }], coordinatorArgs });
  after(async () => {
    for (const m of machines) await m.destroy();
    await http?.down();
    await s3?.stop();
  });

  async function uploadsOf(runId: string): Promise<UploadRecord[]> {
    return (await farm.api<{ uploads: UploadRecord[] }>(`/api/runs/${runId}/uploads`)).uploads;
  }

  async function allUploaded(runId: string, expected: number, timeoutMs = 60_000): Promise<UploadRecord[]> {
    return pollFor(
      async () => {
        const uploads = await uploadsOf(runId);
        return uploads.length === expected && uploads.every((u) => u.state === 'uploaded') && uploads;
      },
      timeoutMs,
      () => `${expected} uploads of run ${runId} done\n${farm.tail('coordinator')}`,
      200,
    );
  }

  /** The run's upload to the HTTP cache, once an attempt failed. */
  function httpUploadRetrying(runId: string): Promise<UploadRecord> {
    return pollFor(
      async () => (await uploadsOf(runId)).find((u) => u.target.startsWith(http.url) && u.state === 'retrying'),
      60_000,
      () => `the HTTP upload of run ${runId} retrying\n${farm.tail('coordinator')}`,
    );
  }

  /** The start of the error of a failed upload of this path to the HTTP cache, as a pattern. */
  function httpUploadFailure(path: string): string {
    return `upload of ${path} to ${http.url.replace(/[.?]/g, '\\$&')}\\S* failed `;
  }

  /** Realises the paths on a fresh machine from this substituter only, with signatures required and this key trusted. */
  async function substitute(name: string, substituter: string, publicKey: string, paths: readonly string[]) {
    const machine = new SimulatedMachine(`${name}-${process.pid}`, { nixConfig: ['build-users-group ='] });
    machines.push(machine);
    const result = await machine.run(
      'nix-store',
      [
        '--realise',
        ...paths,
        '--max-jobs',
        '0',
        '--option',
        'substituters',
        substituter,
        '--option',
        'require-sigs',
        'true',
        '--option',
        'trusted-public-keys',
        publicKey,
      ],
      { timeoutMs: 60_000 },
    );
    return { machine, result };
  }

  async function buildChain(): Promise<{ runId: string; top: string; closure: string[] }> {
    const fixture = chain(3);
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()], { timeoutMs: 120_000 });
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const runId = runIdOf(result.stderr);
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    const top = run.results[0]!.outputPath;
    const closure = (await exec('nix-store', ['--query', '--requisites', top])).stdout.trim().split('\n');
    return { runId, top, closure };
  }

  it('a run with --push-to uploads its output with its closure and the farm signatures to file, HTTP and S3 caches; machines with empty stores substitute all 3 paths from each, the farm key trusted and signatures required', async () => {
    const { runId, top, closure } = await buildChain();
    assert.equal(closure.length, 3, 'the top link references the two below it');
    const uploads = await allUploaded(runId, 3);
    assert.deepEqual(
      uploads.map((u) => u.path),
      [top, top, top],
    );
    assert.deepEqual(
      uploads.map((u) => u.attempts),
      [1, 1, 1],
    );
    for (const [name, substituter] of [
      ['file', `file://${fileCache}`],
      ['http', http.url],
      ['s3', s3.httpUrl],
    ] as const) {
      const { machine, result } = await substitute(`sub-${name}`, substituter, farm.address.cacheKey, [top]);
      assert.equal(result.exitCode, 0, `${name}: ${result.stderr}`);
      const valid = await machine.runChecked('nix-store', ['--query', '--requisites', top]);
      assert.deepEqual(valid.trim().split('\n').sort(), [...closure].sort(), `${name}: the whole closure was substituted`);
    }
    // each path's narinfo was put once on each remote cache, after its NAR
    for (const p of closure) {
      assert.equal(http.puts.get(`${hashPart(p)}.narinfo`), 1, p);
      assert.equal(s3.puts.get(`${hashPart(p)}.narinfo`), 1, p);
    }
    assert.deepEqual(readdirSync(join(farm.coordinatorStateDir, 'upload-staging')), [], 'S3 staging is removed after each upload');
    const metrics = await (await fetch(new URL('/metrics', farm.address.httpUrl), { headers: farm.authHeaders('read') })).text();
    assert.match(metrics, /^nixfarm_upload_queue_depth 0$/m);
    assert.match(metrics, new RegExp(`^nixfarm_uploads_total\\{target="${http.url.replace(/[.?]/g, '\\$&')}",result="uploaded"\\} 1$`, 'm'));
  });

  it('nixfarm build --push-to adds a cache for that run only: its output lands there too, and a machine substitutes it', async () => {
    const extra = join(dir, 'run-cache');
    const fixture = chain(2);
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt(), '--push-to', `file://${extra}`], {
      timeoutMs: 120_000,
    });
    assert.equal(result.exitCode, 0, result.stderr);
    const runId = runIdOf(result.stderr);
    const uploads = await allUploaded(runId, 4);
    assert.deepEqual(uploads.map((u) => u.target).filter((t) => t.startsWith(`file://${extra}`)).length, 1);
    const top = uploads[0]!.path;
    const { result: substituted } = await substitute('sub-run', `file://${extra}`, farm.address.cacheKey, [top]);
    assert.equal(substituted.exitCode, 0, substituted.stderr);
    writeFileSync(join(dir, 'a-file-2'), '');
    const refused = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt(), '--push-to', `file://${dir}/a-file-2/cache`]);
    assert.equal(refused.exitCode, 2);
    assert.match(refused.stderr, /cache directory \S+a-file-2\/cache .* cannot be written \(ENOTDIR\)/);
  });

  it('a cache that does not trust the signing key is refused by Nix: substitution from the file cache fails with another key trusted', async () => {
    const { top } = await buildChain();
    const other = await signingKey(dir, 'someone-else-1');
    const { result } = await substitute('sub-untrusted', `file://${fileCache}`, other.publicKey, [top]);
    assert.notEqual(result.exitCode, 0, 'nothing may be substituted without a trusted signature');
  });

  it('nixfarm push copies a past run to another cache with the signatures its store holds (nix store sign), and says so per output', async () => {
    const { runId, top, closure } = await buildChain();
    await allUploaded(runId, 3);
    const storeKey = await signingKey(dir, 'store-key-1');
    await exec('nix', ['--extra-experimental-features', 'nix-command', 'store', 'sign', '--key-file', storeKey.secretFile, '--recursive', top]);
    const pushed = join(dir, 'pushed-cache');
    const result = await farm.cli(['push', runId, '--to', `file://${pushed}`, '--wait']);
    assert.equal(result.exitCode, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^uploaded  ${top} -> file://${pushed}$`, 'm'));
    const { machine, result: substituted } = await substitute('sub-pushed', `file://${pushed}`, storeKey.publicKey, [top]);
    assert.equal(substituted.exitCode, 0, substituted.stderr);
    assert.equal((await machine.runChecked('nix-store', ['--query', '--requisites', top])).trim().split('\n').length, closure.length);
    assert.equal((await uploadsOf(runId)).length, 4, 'the push is one more upload of the run');
  });

  it('bad pushes get one message naming the thing: a run that does not exist, a URL with an unknown scheme, an unwritable directory', async () => {
    const noRun = await farm.cli(['push', 'nosuchrun123', '--to', `file://${dir}/x`]);
    assert.notEqual(noRun.exitCode, 0);
    assert.match(noRun.stderr, /nosuchrun123/);
    const scheme = await farm.cli(['push', 'nosuchrun123', '--to', 'ftp://cache.example/']);
    assert.equal(scheme.exitCode, 2);
    assert.match(scheme.stderr, /cache URL "ftp:\/\/cache.example\/" has the scheme ftp, which nixfarm cannot upload to: use file:\/\/\/dir/);
    const { runId } = await buildChain();
    // a directory below a file can never be made
    writeFileSync(join(dir, 'a-file'), '');
    const unwritable = await farm.cli(['push', runId, '--to', `file://${dir}/a-file/cache`]);
    assert.notEqual(unwritable.exitCode, 0);
    assert.match(unwritable.stderr, new RegExp(`cache directory ${dir}/a-file/cache \\(from file://${dir}/a-file/cache\\) cannot be written \\(ENOTDIR\\)`));
  });

  it('an HTTP cache that refuses uploads (403) gets a per-upload error naming the output, the cache and the refusal; accepted later, it gets them', async () => {
    http.refusePuts = true;
    const { runId, top } = await buildChain();
    const refused = await httpUploadRetrying(runId);
    assert.match(refused.error ?? '', new RegExp(`${httpUploadFailure(top)}\\(attempt 1 of 12, retried with back-off\\): .*403`, 's'));
    http.refusePuts = false;
    await allUploaded(runId, 3, 120_000);
  });

  it('an HTTP cache that is down delays its uploads without slowing the run: they retry with the error shown, then each path is put exactly once when it is back', async () => {
    await http.down();
    const started = Date.now();
    const { runId, top, closure } = await buildChain();
    const runMs = Date.now() - started;
    const retrying = await httpUploadRetrying(runId);
    assert.match(retrying.error ?? '', new RegExp(`${httpUploadFailure(top)}\\(attempt \\d+ of 12, retried with back-off\\)`));
    // the dashboard's upload panel: the queue is behind, and says why
    const panel = (await farm.api<DashboardSnapshot>('/api/dashboard')).uploads;
    assert.ok(panel !== undefined && panel.depth >= 1 && panel.lagSeconds > 0, JSON.stringify(panel));
    assert.ok(
      panel.failing.some((u) => u.path === top && u.state === 'retrying' && /failed \(attempt/.test(u.error ?? '')),
      JSON.stringify(panel.failing),
    );
    await http.up();
    const uploads = await allUploaded(runId, 3, 120_000);
    const after = (await farm.api<DashboardSnapshot>('/api/dashboard')).uploads;
    assert.deepEqual(
      after?.failing.filter((u) => u.path === top),
      [],
      'an upload that succeeded is no longer listed as failing',
    );
    assert.ok(uploads.find((u) => u.target.startsWith(http.url))!.attempts >= 2);
    for (const p of closure) assert.equal(http.puts.get(`${hashPart(p)}.narinfo`), 1, `${p} put once`);
    assert.ok(runMs < 30_000, `the run took ${runMs} ms while its cache was down`);
  });
});
