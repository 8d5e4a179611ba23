import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import {
  bullmqOptions,
  queueNameFor,
  redisKeys,
  type DerivationView,
  type ApiError,
  type QueueSummary,
  type RunView,
  type WorkerListing,
} from '@nixfarm/shared';
import { pollFor, sleep } from '../harness/poll.js';
import type { CommandResult } from '../harness/test-farm.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { runIdOf } from '../harness/build-timeline.js';
import { chain, freshSalt, outputPathsOf, nixInstantiate } from '../harness/nix-fixtures.js';

/**
 * Bad input of every kind, thrown at a farm while a good run is building:
 * each is refused with a message that names the thing and the rule, and
 * nothing already built or queued is lost (the good run ends succeeded with
 * every derivation built once, earlier outputs stay valid and are not rebuilt).
 */

const HASH = '0c0ymkk6hv1dbfz5fk7x8b0c7c3l0zvm';
const SYSTEM = `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux`;

function nameOf(drvPath: string): string {
  return drvPath.replace(/^\/nix\/store\/\w{32}-|\.drv$/g, '');
}

describe('bad input while a good run builds', () => {
  // registered before the farm's hooks, so that it runs before the farm stops
  after(async () => {
    redis?.disconnect();
  });
  const farm = farmForSuite({ workers: [{ name: 'gamma', maxJobs: 2 }] });
  let redis: Redis;
  /** a file that bad input tries to create with `$(touch ...)`: it must never appear */
  let marker: string;
  let earlier: { file: string; salt: string; outputs: string[] };
  let good: { file: string; salt: string; links: string[]; result: Promise<CommandResult>; stderrSoFar: () => string; runId: string };

  const runIds = async (): Promise<string[]> => (await farm.api<{ runs: RunView[] }>('/api/runs')).runs.map((r) => r.id).sort();

  /** Derivation nodes in the graph: bad input must never add one. */
  const graphNodes = async (): Promise<number> => {
    let cursor = '0';
    let count = 0;
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${redisKeys.drv('*')}`, 'COUNT', 1000);
      cursor = next;
      count += keys.filter((k) => /^nixfarm:drv:[0-9a-z]{32}$/.test(k)).length;
    } while (cursor !== '0');
    return count;
  };

  /** BullMQ jobs not finished in the farm's queues. */
  const pendingJobs = async (): Promise<number> => {
    const { queues } = await farm.api<{ queues: QueueSummary[] }>('/api/queues');
    return queues.reduce((sum, q) => sum + q.waiting + q.running, 0);
  };

  const goodRows = async (): Promise<DerivationView[]> =>
    (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${good.runId}/derivations`)).derivations;

  const request = async (path: string, init?: RequestInit): Promise<{ status: number; body: ApiError; text: string }> => {
    const response = await fetch(new URL(path, farm.address.httpUrl), {
      ...init,
      headers: { ...farm.authHeaders(), ...(init?.headers as Record<string, string> | undefined) },
    });
    const text = await response.text();
    let body: ApiError;
    try {
      body = JSON.parse(text) as ApiError;
    } catch {
      assert.fail(`${path}: the API answered ${response.status} with a body that is not JSON: ${text.slice(0, 200)}`);
    }
    return { status: response.status, body, text };
  };

  const postRun = (body: string, contentType = 'application/json') => request('/api/runs', { method: 'POST', headers: { 'content-type': contentType }, body });

  before(async () => {
    redis = new Redis(farm.redis.url, { maxRetriesPerRequest: null });
    marker = join(farm.dir, 'pwned');
    // Built before any bad input: must stay valid and never be rebuilt.
    const first = chain(2);
    const salt = freshSalt();
    const built = await farm.build([first.file, '-A', 'all', '--argstr', 'salt', salt]);
    assert.equal(built.exitCode, 0, `${built.stderr}\n${farm.diagnostics()}`);
    const [drv] = await nixInstantiate(first.file, ['all'], { salt });
    earlier = { file: first.file, salt, outputs: await outputPathsOf(drv!) };

    // The good run: a chain of sleeping builds, long enough to outlast the bad input below.
    const fixture = chain(5, { sleepSeconds: 6 });
    const goodSalt = freshSalt();
    const spawned = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, fixture.file, '-A', 'all', '--argstr', 'salt', goodSalt]);
    const deadline = Date.now() + 60_000;
    let runId: string | undefined;
    while (runId === undefined) {
      if (Date.now() > deadline) throw new Error(`the good run did not start:\n${spawned.stderrSoFar()}\n${farm.diagnostics()}`);
      const match = /run (\w+)/.exec(spawned.stderrSoFar());
      runId = match?.[1];
      if (runId === undefined) await sleep(100);
    }
    good = { file: fixture.file, salt: goodSalt, links: fixture.links, result: spawned.result, stderrSoFar: spawned.stderrSoFar, runId };
  });

  it('drops a worker event with a bad store path, with a log line naming it, and keeps applying the good ones', async () => {
    // Wait until a build of the good run is running: the forged reports claim it finished.
    const deadline = Date.now() + 60_000;
    let running: DerivationView | undefined;
    while ((running = (await goodRows()).find((d) => d.status === 'running')) === undefined) {
      assert.ok(Date.now() < deadline, `no build of the good run started:\n${farm.diagnostics()}`);
      await sleep(100);
    }
    const hash = running.drvPath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    const finished = (outputs: Record<string, string>, extra: Record<string, unknown> = {}) => ({
      type: 'finished',
      drvPath: running!.drvPath,
      worker: 'gamma',
      jobId: hash,
      attempt: 0,
      outcome: 'succeeded',
      outputs,
      logTail: [],
      timings: { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 },
      at: Date.now(),
      ...extra,
    });
    const forged: Array<{ payload: string; problem: RegExp }> = [
      {
        payload: JSON.stringify(finished({ out: `/nix/store/${HASH}-x;rm -rf ~` })),
        problem: new RegExp(`outputs\\.out: not a valid Nix store path \\(name may only contain .*\\) \\(got "/nix/store/${HASH}-x;rm -rf ~"\\)`),
      },
      { payload: JSON.stringify(finished({ out: `/nix/store/${HASH}-$(touch ${marker})` })), problem: /outputs\.out: not a valid Nix store path/ },
      {
        payload: JSON.stringify(finished({ out: `/nix/store/${HASH}-link/../../../etc` })),
        problem: /outputs\.out: not a valid Nix store path \(must name a top-level store object/,
      },
      { payload: JSON.stringify(finished({ out: `/nix/store/${HASH}-a b` })), problem: /outputs\.out: not a valid Nix store path \(name may only contain/ },
      { payload: JSON.stringify(finished({ out: `/nix/store/${HASH}-a\nb` })), problem: /outputs\.out: not a valid Nix store path/ },
      { payload: JSON.stringify({ ...finished({}), drvPath: `/nix/store/${HASH}-$(id).drv` }), problem: /drvPath: not a valid Nix store path/ },
      { payload: JSON.stringify(finished({ out: `/nix/store/${HASH}-ok` }, { narHashes: { [`/nix/store/${HASH}-o k`]: 'sha256:x' } })), problem: /narHashes/ },
      { payload: '{ not json', problem: /not JSON/ },
    ];
    const ids: string[] = [];
    for (const f of forged) ids.push((await redis.xadd(redisKeys.workerEvents, '*', 'e', f.payload))!);
    const injectedAt = Date.now();

    // Each is dropped with an error line naming the event and what is wrong with it.
    const logDeadline = Date.now() + 30_000;
    const droppedLines = (): Array<{ eventId?: string; problem?: string; msg?: string }> =>
      farm
        .tail('coordinator', 100_000)
        .split('\n')
        .filter((l) => l.includes('malformed worker event dropped'))
        .map((l) => JSON.parse(l) as { eventId?: string; problem?: string });
    while (droppedLines().length < forged.length && Date.now() < logDeadline) await sleep(100);
    const dropped = new Map(droppedLines().map((l) => [l.eventId, l.problem ?? '']));
    for (const [i, f] of forged.entries()) {
      assert.ok(dropped.has(ids[i]), `event ${ids[i]} (${f.payload.slice(0, 80)}) was not logged as dropped:\n${farm.tail('coordinator')}`);
      assert.match(dropped.get(ids[i])!, f.problem);
    }

    // The forged "finished" changed nothing: the build still runs, and later reports (the real ones) still apply.
    // (It may have finished meanwhile, but only by its real build, which sleeps 6 s: never sooner.)
    const row = (await goodRows()).find((d) => d.drvPath === running!.drvPath);
    const finishedForReal = row?.status === 'succeeded' && (row.finishedAt ?? 0) - (row.startedAt ?? Infinity) >= 5000;
    assert.ok(row?.status === 'running' || finishedForReal, `status after forged reports: ${JSON.stringify(row)}`);
    const appliedDeadline = Date.now() + 120_000;
    while (!(await goodRows()).some((d) => d.status === 'succeeded' && (d.finishedAt ?? 0) > injectedAt)) {
      assert.ok(Date.now() < appliedDeadline, `no report was applied after the forged ones:\n${farm.diagnostics()}`);
      await sleep(200);
    }
  });

  it('fails a malformed job pushed straight into a queue with the validation message; the worker keeps working', async () => {
    const queueName = queueNameFor({ system: SYSTEM, requiredFeatures: [] });
    assert.ok((await redis.smembers(redisKeys.queues)).includes(queueName), 'the worker serves this queue');
    const connection = new Redis(farm.redis.url, { maxRetriesPerRequest: null });
    const queue = new Queue(queueName, bullmqOptions(connection));
    try {
      const valid = {
        drvPath: `/nix/store/${HASH}-never-built.drv`,
        name: 'never-built',
        system: SYSTEM,
        requiredFeatures: [],
        outputs: { out: `/nix/store/${HASH}-never-built` },
        inputPaths: [],
      };
      const bad: Array<{ id: string; data: unknown; reason: RegExp[] }> = [
        {
          id: 'bad-types',
          data: { ...valid, drvPath: 42, requiredFeatures: 'kvm', timeoutSeconds: 'long' },
          reason: [/drvPath: expected a string, got 42/, /requiredFeatures: expected a list, got "kvm"/, /timeoutSeconds: expected a number, got "long"/],
        },
        {
          id: 'bad-drv-path',
          data: { ...valid, drvPath: `/nix/store/${HASH}-$(touch ${marker}).drv` },
          reason: [/drvPath: not a valid Nix store path \(must name a top-level store object \(no further slashes\)\) \(got "\/nix\/store\/\w{32}-\$\(touch /],
        },
        {
          id: 'bad-drv-name',
          data: { ...valid, drvPath: `/nix/store/${HASH}-x;id.drv` },
          reason: [
            new RegExp(
              `drvPath: not a valid Nix store path \\(name may only contain letters, digits and \\+ - \\. _ \\? =\\) \\(got "/nix/store/${HASH}-x;id\\.drv"\\)`,
            ),
          ],
        },
        {
          id: 'bad-input-path',
          data: { ...valid, inputPaths: [`/nix/store/${HASH}-ok`, `/nix/store/${HASH}-a;b`, `/nix/store/${HASH}-x/../../etc`, `/nix/store/${HASH}-a b\n`] },
          reason: [
            /inputPaths\.1: not a valid Nix store path/,
            /inputPaths\.2: not a valid Nix store path \(must name a top-level store object/,
            /inputPaths\.3: not a valid/,
          ],
        },
        { id: 'bad-unknown-field', data: { ...valid, command: 'rm -rf /' }, reason: [/unknown field "command"; known fields: drvPath, name, system/] },
        { id: 'bad-not-an-object', data: 'rm -rf /', reason: [/expected an object, got "rm -rf \/"/] },
      ];
      for (const b of bad) await queue.add('malformed', b.data, { jobId: b.id });
      await redis.publish(redisKeys.queueWakeups, queueName);
      for (const b of bad) {
        const deadline = Date.now() + 60_000;
        let state = '';
        while ((state = await queue.getJobState(b.id)) !== 'failed') {
          assert.ok(Date.now() < deadline, `job ${b.id} is ${state}, not failed:\n${farm.tail('gamma')}`);
          await sleep(100);
        }
        const job = await queue.getJob(b.id);
        assert.match(job!.failedReason, new RegExp(`invalid build job ${b.id} payload`));
        for (const r of b.reason) assert.match(job!.failedReason, r, `${b.id}: ${job!.failedReason}`);
        assert.equal(job!.attemptsMade, 1, 'a malformed job is not retried');
      }
      // The worker's logger writes asynchronously: its lines can reach the log file after the job is failed in Redis.
      const logged = (b: { id: string }, text: string): boolean => new RegExp(`"jobId":"${b.id}".*malformed job rejected`).test(text);
      await pollFor(
        () => bad.every((b) => logged(b, farm.tail('gamma', 100_000))),
        10_000,
        () => 'the worker to log every rejected job',
      ).catch(() => undefined);
      const log = farm.tail('gamma', 100_000);
      for (const b of bad) assert.match(log, new RegExp(`"jobId":"${b.id}".*malformed job rejected`), `the worker logged ${b.id}`);
      assert.equal(farm.workers.get('gamma')!.process.exitCode, null, 'the worker is still running');
      assert.ok(!existsSync(marker), 'nothing in the payload was executed');
      // Nothing of it reached the graph: the coordinator never heard of the forged derivation.
      assert.equal(await redis.exists(redisKeys.drv(HASH)), 0);
    } finally {
      await queue.close();
      connection.disconnect();
    }
  });

  it("exits 2 with Nix's message for a missing file, a syntax error, throw, assert, an unknown attribute and a non-derivation; nothing is registered or queued", async () => {
    const dir = farm.dir;
    const syntax = join(dir, 'syntax.nix');
    writeFileSync(syntax, '{ a = ; }');
    const throwing = join(dir, 'throw.nix');
    writeFileSync(throwing, '{ a = throw "nixfarm-test: broken on purpose"; b = assert 1 == 2; 3; n = 42; s = "a string"; }');
    const cases: Array<{ args: string[]; message: RegExp }> = [
      { args: [join(dir, 'does-not-exist.nix')], message: /does-not-exist\.nix.*(does not exist|No such file)/s },
      { args: [syntax], message: /syntax error/ },
      { args: ['--expr', '{ a = ; }'], message: /syntax error/ },
      { args: [throwing, '-A', 'a'], message: /nixfarm-test: broken on purpose/ },
      { args: [throwing, '-A', 'b'], message: /assertion .*failed/ },
      { args: [throwing, '-A', 'nope'], message: /attribute 'nope'.*not found/ },
      { args: [throwing, '-A', 'n'], message: /does not evaluate to a derivation/ },
      { args: [throwing, '-A', 's'], message: /does not evaluate to a derivation/ },
    ];
    const runsBefore = await runIds();
    const nodesBefore = await graphNodes();
    for (const c of cases) {
      const result = await farm.build(c.args);
      assert.equal(result.exitCode, 2, `${c.args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, /evaluation failed/);
      assert.match(result.stderr, c.message);
      assert.equal(result.stdout, '');
      assert.deepEqual(await runIds(), runsBefore, `${c.args.join(' ')} registered no run`);
      assert.equal(await graphNodes(), nodesBefore, `${c.args.join(' ')} added nothing to the build graph`);
      assert.ok((await pendingJobs()) <= 1, `${c.args.join(' ')} queued nothing: only the good chain's one build may be pending`);
    }
  });

  it('rejects malformed API bodies and bad route parameters with 4xx in the error shape, never a 500, and registers nothing', async () => {
    const runsBefore = await runIds();
    const nodesBefore = await graphNodes();
    const expectError = (what: string, answer: { status: number; body: ApiError; text: string }, status: number, message: RegExp, code?: string) => {
      assert.equal(answer.status, status, `${what}: ${answer.text}`);
      assert.equal(typeof answer.body.error?.code, 'string', `${what}: error shape ${answer.text}`);
      assert.equal(typeof answer.body.error?.message, 'string', `${what}: error shape ${answer.text}`);
      assert.match(answer.body.error.message, message, what);
      if (code !== undefined) assert.equal(answer.body.error.code, code, what);
    };

    // Bodies: unknown fields, wrong types, missing and contradictory fields, not JSON, not an object, too large.
    expectError(
      'unknown field',
      await postRun(JSON.stringify({ expr: '1', attrs: [], colour: 'red' })),
      400,
      /unknown field "colour"; known fields: file, expr, attrs/,
      'invalid-request',
    );
    expectError('misspelt field', await postRun(JSON.stringify({ expr: '1', atrs: ['all'] })), 400, /"atrs" \(did you mean "attrs"\?\)/);
    const wrongTypes = await postRun(
      JSON.stringify({ expr: '1', attrs: 'all', priority: 'high', order: 'random', rebuildFailed: 'yes', args: [{ name: 'a b', expr: 1 }] }),
    );
    expectError('wrong types', wrongTypes, 400, /attrs: expected a list, got "all"/);
    for (const line of [
      /priority: expected a number, got "high"/,
      /order: expected one of critical-path, fifo; got "random"/,
      /rebuildFailed: expected true or false, got "yes"/,
      /args\.0\.name: a Nix identifier/,
      /args\.0\.expr: expected a string, got 1/,
    ]) {
      assert.match(wrongTypes.body.error.message, line);
    }
    expectError(
      'out of range',
      await postRun(JSON.stringify({ expr: '1', priority: 5000, timeoutSeconds: -1 })),
      400,
      /priority: must be at most 1000; got 5000/,
    );
    expectError('relative file', await postRun(JSON.stringify({ file: 'default.nix' })), 400, /file: file must be an absolute path/);
    expectError('neither file nor expr', await postRun(JSON.stringify({ attrs: ['all'] })), 400, /exactly one of file .* or expr/);
    expectError('not JSON', await postRun('{ not json'), 400, /not valid JSON/, 'invalid-request');
    expectError('empty JSON body', await postRun(''), 400, /empty/);
    expectError('JSON null', await postRun('null'), 400, /expected an object, got null/);
    expectError('JSON list', await postRun('[{"expr":"1"}]'), 400, /expected an object/);
    expectError('prototype pollution', await postRun('{"expr":"1","__proto__":{"admin":true}}'), 400, /__proto__/);
    expectError('another content type', await postRun('expr=1', 'application/x-www-form-urlencoded'), 415, /application\/json/, 'unsupported-media-type');
    const huge = await postRun(JSON.stringify({ expr: 'x'.repeat(2 * 1024 * 1024) }));
    expectError('over the body limit', huge, 413, /larger than the API's limit of 1048576 bytes \(1 MiB\)/, 'body-too-large');

    // Route parameters: malformed ids are 400, well-formed unknown ones 404; never a 500.
    for (const id of ['..%2F..%2Fetc', 'ID%3Brm', '%24(id)', 'a%20b', 'a%0Ab', 'UPPER']) {
      for (const [method, path] of [
        ['GET', `/api/runs/${id}`],
        ['POST', `/api/runs/${id}/cancel`],
        ['GET', `/api/runs/${id}/derivations`],
        ['GET', `/api/runs/${id}/events`],
      ] as const) {
        expectError(
          `${method} ${path}`,
          await request(path, { method }),
          400,
          /is not a run id: run ids are 6-40 lower-case letters and digits/,
          'invalid-request',
        );
      }
    }
    expectError('unknown run', await request('/api/runs/abcdef123456'), 404, /no run with id "abcdef123456": list runs with `nixfarm runs`/, 'run-not-found');
    expectError('cancel an unknown run', await request('/api/runs/abcdef123456/cancel', { method: 'POST' }), 404, /no run with id/, 'run-not-found');
    expectError('events of an unknown run', await request('/api/runs/abcdef123456/events'), 404, /no run with id/);
    expectError('bad event cursor', await request(`/api/runs/${good.runId}/events?after=$(id)`), 400, /after \/ Last-Event-ID must be a stream id/);
    expectError('over-long id', await request(`/api/runs/${'a'.repeat(1000)}`), 414, /too long/);
    expectError('broken percent-encoding', await request('/api/runs/%E0%A4%A'), 400, /not a valid url component/);
    expectError('why without a path', await request('/api/why'), 400, /give \?path= a \.drv path/);
    expectError('why with two paths', await request('/api/why?path=a&path=b'), 400, /give \?path=/);
    expectError('no such route', await request('/api/runz'), 404, /no route GET \/api\/runz; the API has: .*GET \/api\/runs\/:id/, 'no-such-route');
    expectError('wrong method', await request('/api/runs', { method: 'DELETE' }), 404, /no route DELETE \/api\/runs/);

    assert.deepEqual(await runIds(), runsBefore, 'no run registered');
    assert.equal(await graphNodes(), nodesBefore, 'nothing added to the build graph');
    assert.ok(!farm.tail('coordinator', 100_000).includes('"request failed"'), 'no request ended in a 500');
  });

  it('refuses store paths with ; $() .. spaces or newlines in `why`, over the API and on the command line, naming the path and the rule', async () => {
    const bad: Array<{ path: string; rule: RegExp }> = [
      { path: `/nix/store/${HASH}-x;rm -rf ~`, rule: /name may only contain letters, digits and \+ - \. _ \? =/ },
      { path: `/nix/store/${HASH}-$(touch ${marker})`, rule: /(name may only contain|no further slashes)/ },
      { path: `/nix/store/${HASH}-$(id)`, rule: /name may only contain/ },
      { path: `/nix/store/${HASH}-hello/../../../etc/passwd`, rule: /a path inside a store object may not contain "\.\."/ },
      { path: '/nix/store/../../etc/passwd', rule: /not a valid Nix store path/ },
      { path: `/nix/store/${HASH}-a b`, rule: /name may only contain/ },
      { path: `/nix/store/${HASH}-hello/bin/a b`, rule: /a path inside a store object may not contain "a b"/ },
      { path: `/nix/store/${HASH}-a\nb`, rule: /name may only contain/ },
      { path: 'abc;id', rule: /neither a store path .* nor a hash prefix/ },
    ];
    for (const b of bad) {
      const shown = JSON.stringify(b.path)
        .slice(1, -1)
        .replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const api = await request(`/api/why?path=${encodeURIComponent(b.path)}`);
      assert.equal(api.status, 400, `${JSON.stringify(b.path)}: ${api.text}`);
      assert.match(api.body.error.message, new RegExp(shown), 'the message names the path');
      assert.match(api.body.error.message, b.rule);
      const cli = await farm.cli(['why', '--coordinator', farm.address.httpUrl, b.path]);
      assert.equal(cli.exitCode, 2, `nixfarm why ${JSON.stringify(b.path)}: ${cli.stderr}`);
      assert.match(cli.stderr, new RegExp(shown), 'the CLI names the path');
      assert.match(cli.stderr, b.rule);
      assert.equal(cli.stdout, '');
    }
    assert.ok(!existsSync(marker), 'nothing in a path was executed');
  });

  it("refuses a worker whose key is not authorised, naming its fingerprint and how to authorise it; the farm's work goes on", async () => {
    const worker = await farm.startWorker({ name: 'intruder', unauthorised: true });
    const code = await new Promise<number | null>((resolve) => {
      if (worker.process.exitCode !== null) resolve(worker.process.exitCode);
      else worker.process.once('exit', (c) => resolve(c));
    });
    assert.notEqual(code, 0);
    // The process has exited, but its output reaches the log file through a pipe a moment later.
    const log = await pollFor(
      () => {
        const text = farm.tail('intruder', 200);
        return /to authorise it/.test(text) ? text : undefined;
      },
      10_000,
      () => `the intruder's refusal in its log:\n${farm.tail('intruder', 200)}`,
    ).catch(() => farm.tail('intruder', 200));
    assert.match(log, /refused this worker's SSH key SHA256:[A-Za-z0-9+/]{43}/);
    assert.match(log, /to authorise it, on the coordinator machine run: nixfarm authorize --state-dir .+ 'ssh-ed25519 [A-Za-z0-9+/=]+/);
    const { workers } = await farm.api<{ workers: WorkerListing[] }>('/api/workers');
    assert.ok(!workers.some((w) => w.name === 'intruder'), 'an unauthorised worker never registers');
    assert.ok(
      workers.some((w) => w.name === 'gamma' && w.alive),
      'the authorised worker is still there',
    );
  });

  it('the good run still succeeds with every derivation built once, earlier outputs stay valid and are not rebuilt', async () => {
    const result = await good.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    assert.equal(runIdOf(result.stderr), good.runId);
    const rows = await goodRows();
    assert.deepEqual(rows.map((r) => nameOf(r.drvPath)).sort(), [...good.links].sort());
    for (const row of rows) {
      assert.equal(row.status, 'succeeded', `${row.drvPath}: ${JSON.stringify(row)}`);
      assert.equal(row.attempts, 1, `${row.drvPath} built once`);
      assert.equal(row.worker, 'gamma');
    }
    const [drv] = await nixInstantiate(good.file, ['all'], { salt: good.salt });
    const outputs = await outputPathsOf(drv!);
    assert.equal(result.stdout.trim(), outputs.join('\n'));
    assert.equal(
      spawnSync('nix-store', ['--check-validity', ...outputs, ...earlier.outputs]).status,
      0,
      "the good run's and the earlier run's outputs are valid on the coordinator",
    );

    // The earlier run again: everything is there, nothing is built.
    const again = await farm.build([earlier.file, '-A', 'all', '--argstr', 'salt', earlier.salt]);
    assert.equal(again.exitCode, 0, again.stderr);
    assert.match(again.stderr, /0 derivations to build/);
    assert.equal(again.stdout.trim(), earlier.outputs.join('\n'));

    // And the worker still builds new work.
    const fresh = await farm.build([chain(2).file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    assert.equal(fresh.exitCode, 0, `${fresh.stderr}\n${farm.diagnostics()}`);
    assert.match(fresh.stderr, /built link-1 on gamma/);
    assert.ok(!existsSync(marker), 'nothing in any bad input was executed');
  });
});
