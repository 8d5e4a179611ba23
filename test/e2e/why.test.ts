import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { DerivationLocator, OUTPUT_INDEX_KEY, parseWhyQuery, type WhyAnswer } from '@nixfarm/coordinator';
import { hashPart, redisKeys } from '@nixfarm/shared';
import { NIXFARM_BIN, type TestFarm, type CommandResult } from '../harness/test-farm.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { sleep } from '../harness/poll.js';
import { chain, freshSalt, layeredDag, nixInstantiate, outputPathsOf } from '../harness/nix-fixtures.js';
import { killGroup } from '../harness/process-cleanup.js';
import { startPrivateRedis, type PrivateRedis } from '../harness/private-redis.js';

/** Base-32 hash from one repeated character plus a distinguishing tail. */
function fakeHash(head: string, tail = ''): string {
  return (head.repeat(32 - tail.length) + tail).slice(0, 32);
}

describe('nixfarm why: finding the derivation (real Redis)', () => {
  let server: PrivateRedis;
  let redis: Redis;
  let locator: DerivationLocator;

  async function addNode(hash: string, name: string, status = 'waiting'): Promise<{ drvPath: string; outPath: string }> {
    const drvPath = `/nix/store/${hash}-${name}.drv`;
    const outPath = `/nix/store/${hash.slice(-6)}${'z'.repeat(26)}-${name}`;
    await redis.hset(redisKeys.drv(hash), { path: drvPath, name, status, job: JSON.stringify({ drvPath, outputs: { out: outPath } }) });
    await redis.sadd(redisKeys.drvDependents(hash), 'x'); // a non-node key under the same prefix
    return { drvPath, outPath };
  }

  before(async () => {
    server = await startPrivateRedis({});
    redis = new Redis(server.url, { maxRetriesPerRequest: null });
    locator = new DerivationLocator(redis);
  });
  beforeEach(async () => {
    await redis.flushall();
  });
  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  it('resolves a .drv path, an output path (through the index it fills) and unique hash prefixes', async () => {
    const a = await addNode(fakeHash('a', '00001'), 'alpha');
    const b = await addNode(fakeHash('a', '00002'), 'beta');
    await addNode(fakeHash('b'), 'gamma', 'succeeded');
    assert.deepEqual(await locator.resolve(parseWhyQuery(a.drvPath)), { kind: 'found', hash: hashPart(a.drvPath), via: 'drv-path' });
    assert.equal(await redis.exists(OUTPUT_INDEX_KEY), 0);
    assert.deepEqual(await locator.resolve(parseWhyQuery(b.outPath)), { kind: 'found', hash: hashPart(b.drvPath), via: 'output-path' });
    assert.equal(await redis.hlen(OUTPUT_INDEX_KEY), 3, 'one scan indexed every node');
    assert.deepEqual(await locator.resolve(parseWhyQuery(`${a.outPath}/bin/tool`)), { kind: 'found', hash: hashPart(a.drvPath), via: 'output-path' });
    assert.deepEqual(await locator.resolve(parseWhyQuery('bbbb')), { kind: 'found', hash: fakeHash('b'), via: 'hash-prefix' });
    assert.deepEqual(await locator.resolve(parseWhyQuery(hashPart(b.outPath).slice(0, 8))), {
      kind: 'found',
      hash: hashPart(b.drvPath),
      via: 'output-hash-prefix',
    });
  });

  it('lists the candidates of an ambiguous prefix and finds nothing for unknown paths', async () => {
    const a = await addNode(fakeHash('a', '00001'), 'alpha');
    const b = await addNode(fakeHash('a', '00002'), 'beta', 'queued');
    const ambiguous = await locator.resolve(parseWhyQuery('aaaa'));
    assert.equal(ambiguous.kind, 'ambiguous');
    assert.deepEqual(ambiguous.kind === 'ambiguous' && ambiguous.candidates, [
      { hash: hashPart(a.drvPath), drvPath: a.drvPath, status: 'waiting' },
      { hash: hashPart(b.drvPath), drvPath: b.drvPath, status: 'queued' },
    ]);
    assert.deepEqual(await locator.resolve(parseWhyQuery(`/nix/store/${fakeHash('c')}-nope.drv`)), { kind: 'not-found' });
    assert.deepEqual(await locator.resolve(parseWhyQuery(`/nix/store/${fakeHash('c')}-nope`)), { kind: 'not-found' });
    assert.deepEqual(await locator.resolve(parseWhyQuery('ccc')), { kind: 'not-found' });
  });
});

/** `nixfarm build` in the background, killable (farm.spawnCli's child cannot be stopped early). */
function backgroundBuild(farm: TestFarm, args: readonly string[]): { child: ChildProcess; stop: () => void } {
  const child = spawn(process.execPath, [NIXFARM_BIN, 'build', '--coordinator', farm.address.httpUrl, ...args], {
    stdio: 'ignore',
    detached: true,
    env: { ...process.env, NIX_CONFIG: 'substituters =', NIXFARM_TOKEN: farm.adminToken },
  });
  return { child, stop: () => (child.exitCode === null ? killGroup(child.pid, 'SIGKILL') : undefined) };
}

describe('nixfarm why on a real farm', () => {
  // registered before the farm's hooks, so that it runs before the farm stops
  after(async () => {
    for (const stop of background) stop();
  });
  const farm = farmForSuite({ workers: [{ name: 'plain', maxJobs: 1 }] });
  const background: Array<() => void> = [];

  function why(arg: string, json = false): Promise<CommandResult> {
    return farm.cli(['why', '--coordinator', farm.address.httpUrl, arg, ...(json ? ['--json'] : [])], { timeoutMs: 30_000 });
  }

  async function whyJson(arg: string): Promise<WhyAnswer> {
    const r = await why(arg, true);
    assert.equal(r.exitCode, 0, r.stderr);
    return JSON.parse(r.stdout) as WhyAnswer;
  }

  /** Asks until `ok` holds for the JSON answer (exit 2 while the run is not registered yet counts as "not yet"). */
  async function whyUntil(arg: string, ok: (a: WhyAnswer) => boolean, what: string, timeoutMs = 20_000): Promise<WhyAnswer> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      const r = await farm.api<WhyAnswer>(`/api/why?path=${encodeURIComponent(arg)}`).catch((e: Error) => e);
      if (!(r instanceof Error) && ok(r)) return r;
      last = r instanceof Error ? r.message : `${r.derivation.status}: ${r.summary}`;
      if (Date.now() > deadline) assert.fail(`${what}: still not after ${timeoutMs} ms (last: ${last})\n${farm.diagnostics()}`);
      await sleep(150);
    }
  }

  it('names the worker and the missing feature when only a worker without kvm exists', async () => {
    const fixture = chain(1, { requiredSystemFeatures: ['kvm'] });
    const salt = freshSalt();
    const [drvPath] = await nixInstantiate(fixture.file, ['all'], { salt });
    const build = backgroundBuild(farm, [fixture.file, '-A', 'all', '--argstr', 'salt', salt]);
    background.push(build.stop);
    await whyUntil(drvPath!, (a) => a.derivation.status === 'queued' || a.derivation.status === 'unsupported', 'the kvm derivation is ready');

    const text = await why(drvPath!);
    assert.equal(text.exitCode, 0, text.stderr);
    assert.match(text.stdout, /plain\s+ineligible\s+missing feature: kvm/, text.stdout);
    assert.match(text.stdout, /no registered worker can (ever )?build it/);

    const answer = await whyJson(drvPath!);
    assert.deepEqual(answer.derivation.requiredFeatures, ['kvm']);
    assert.deepEqual(
      answer.workers?.map((w) => [w.name, w.verdict, w.reason]),
      [['plain', 'ineligible', 'missing feature: kvm']],
    );
    build.stop();
  });

  it('names the inputs a waiting derivation waits for, a busy worker, the running one, and the worker that built it', async () => {
    // two slow independent inputs, one worker with one slot: one runs, one is queued behind it, `all` waits for both
    const fixture = layeredDag({ layers: 1, width: 2, sleepSeconds: 4 });
    const salt = freshSalt();
    const [allDrv, firstDrv, secondDrv] = await nixInstantiate(fixture.file, ['all', 'node-0-0', 'node-0-1'], { salt });
    const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, fixture.file, '-A', 'all', '--argstr', 'salt', salt], { timeoutMs: 60_000 });

    const waiting = await whyUntil(
      allDrv!,
      (a) => a.derivation.status === 'waiting' && (a.waitingFor ?? []).some((i) => i.status === 'running'),
      'all waits while an input runs',
    );
    assert.deepEqual(waiting.waitingFor!.map((i) => i.drvPath).sort(), [firstDrv, secondDrv].sort());
    assert.match(waiting.summary, /^waiting for 2 inputs to be built: node-0-\d \(running on plain\), node-0-\d \(queued\)$/);

    // the input that runs, and the one queued behind it on the busy worker (asked through the API: the builds take 4 s)
    const running = waiting.waitingFor!.find((i) => i.status === 'running')!;
    const queued = waiting.waitingFor!.find((i) => i.drvPath !== running.drvPath)!;
    const onWorker = await farm.api<WhyAnswer>(`/api/why?path=${encodeURIComponent(running.drvPath)}`);
    assert.equal(onWorker.running?.worker, 'plain');
    assert.match(onWorker.summary, /^building on plain since /);
    const behind = await whyUntil(
      queued.drvPath,
      (a) => a.derivation.status === 'queued' && a.workers?.[0]?.verdict === 'busy',
      'the queued input sees a busy worker',
      6000,
    );
    assert.equal(behind.workers![0]!.reason, 'busy at 1/1');
    assert.match(behind.summary, /every capable live worker is busy \(plain 1\/1\)/);

    // the CLI's words for the waiting one (one or both inputs may still be pending by now)
    const text = await why(allDrv!);
    assert.equal(text.exitCode, 0, text.stderr);
    assert.match(text.stdout, /Why: waiting for [12] inputs? to be built: node-0-\d \((running on plain|queued)\)/, text.stdout);
    assert.match(text.stdout, /Waiting for:\n\s+(running|queued)\s+\/nix\/store\/\w{32}-node-0-\d\.drv/);

    const result = await build.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const done = await why(allDrv!);
    assert.equal(done.exitCode, 0, done.stderr);
    assert.match(done.stdout, /Why: succeeded on plain at /);

    // the same node, by output path and by a hash prefix
    const [outPath] = await outputPathsOf(allDrv!);
    const byOutput = await whyJson(outPath!);
    assert.equal(byOutput.derivation.drvPath, allDrv);
    assert.equal(byOutput.resolvedBy, 'output-path');
    assert.equal(byOutput.result?.worker, 'plain');
    const byPrefix = await whyJson(hashPart(allDrv!).slice(0, 12));
    assert.equal(byPrefix.derivation.drvPath, allDrv);
    assert.equal(byPrefix.derivation.status, 'succeeded');
  });

  it('exits 2 with a clear message for unknown derivations and invalid arguments', async () => {
    const unknown = await why(`/nix/store/${fakeHash('3')}-never-built.drv`);
    assert.equal(unknown.exitCode, 2);
    assert.match(unknown.stderr, /no derivation known for \/nix\/store\/3{32}-never-built\.drv: is it part of a run\?/);
    const noPrefix = await why('3333333');
    assert.equal(noPrefix.exitCode, 2);
    assert.match(noPrefix.stderr, /no derivation known for 3333333/);
    const invalid = await why('/nix/store/not-a-store-path');
    assert.equal(invalid.exitCode, 2);
    assert.match(invalid.stderr, /not a valid Nix store path/);
    const notAHash = await why('hello');
    assert.equal(notAHash.exitCode, 2);
    assert.match(notAHash.stderr, /neither a store path .* nor a hash prefix/);
    // two nodes under one prefix (written straight into the farm's Redis: nodes no run owns)
    const direct = new Redis(farm.redis.url, { maxRetriesPerRequest: null });
    try {
      for (const tail of ['1', '2']) {
        const hash = fakeHash('9', tail);
        await direct.hset(redisKeys.drv(hash), { path: `/nix/store/${hash}-twin-${tail}.drv`, name: `twin-${tail}`, status: 'waiting' });
      }
    } finally {
      direct.disconnect();
    }
    const ambiguous = await why('99999999');
    assert.equal(ambiguous.exitCode, 2);
    assert.match(
      ambiguous.stderr,
      /"99999999" matches 2 derivations; give a longer prefix or the whole path:\n\s+waiting\s+\/nix\/store\/9{31}1-twin-1\.drv\n\s+waiting\s+\/nix\/store\/9{31}2-twin-2\.drv/,
    );
    const response409 = await fetch(new URL('/api/why?path=99999999', farm.address.httpUrl), { headers: farm.authHeaders() });
    assert.equal(response409.status, 409);
    const body = (await response409.json()) as { error: { code: string; candidates: unknown[] } };
    assert.equal(body.error.code, 'ambiguous-query');
    assert.equal(body.error.candidates.length, 2);
    // the API refuses the same before touching Redis
    const response = await fetch(new URL('/api/why?path=%2Fetc%2Fpasswd', farm.address.httpUrl), { headers: farm.authHeaders() });
    assert.equal(response.status, 400);
  });
});
