import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { WorkerEventPublisher } from '@nixfarm/build';
import ssh2 from 'ssh2';
import {
  ReportSigner,
  ServePool,
  ServeSession,
  checkJobId,
  createLogger,
  hashPart,
  hashOfCheckJobId,
  nixBase32,
  parseDerivation,
  redisKeys,
  workerEventSchema,
  type BuildJob,
  type CheckJob,
  type WorkerEvent,
} from '@nixfarm/shared';
import { CheckExecutor, HandBackPublisher, HandBackRegistry, StoreCopier, WorkerNix } from '@nixfarm/worker';
import { SimulatedMachine } from '../harness/simulated-machine.js';
import { freshSalt, nixInstantiate, scriptedFixture } from '../harness/nix-fixtures.js';
import { privateRedisForSuite } from '../harness/private-redis.js';

const NIX_OPTIONS: Array<readonly [string, string]> = [
  ['sandbox', 'true'],
  ['substituters', ''],
];
const SERVE_ARGS = ['--serve', '--write', ...NIX_OPTIONS.flatMap(([k, v]) => ['--option', k, v])];

/** Busybox derivations: one with the same bits every time, one that writes random bytes, one with two random outputs. */
const FIXTURE_ATTRS = `
  same = mk "same" "\${bb}/bin/busybox mkdir $out; echo \${salt} > $out/text";
  random = mk "random" "echo \${salt}; \${bb}/bin/busybox mkdir $out; \${bb}/bin/busybox od -An -N8 -tx8 /dev/urandom > $out/stamp";
  slow = mk "slow" "echo \${salt}; \${bb}/bin/busybox sleep 4; \${bb}/bin/busybox mkdir $out";
  twoRandom = derivation {
    name = "two-random"; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; outputs = [ "foo" "out" ];
    args = [ "-c" "\${bb}/bin/busybox mkdir $out $foo; \${bb}/bin/busybox od -An -N8 -tx8 /dev/urandom > $out/stamp; \${bb}/bin/busybox od -An -N8 -tx8 /dev/urandom > $foo/stamp" ];
    inherit salt;
  };
`;

/**
 * A reproducibility check on real stores: a simulated machine's store
 * stands for the coordinator's (it built the outputs), the host's for the
 * checking worker's, reached through real `nix-store --serve` sessions; the
 * check itself is a real `nix-store --realise --check` on the host, its
 * report and NARs go into a real redis-server.
 */
describe('checking a derivation again on another store', () => {
  const client = privateRedisForSuite('check executor test');
  let coordinator: SimulatedMachine;
  let coordinatorPool: ServePool;
  let workerPool: ServePool;
  let executor: CheckExecutor;
  const fixture = scriptedFixture('check-executor', FIXTURE_ATTRS);

  before(() => {
    coordinator = new SimulatedMachine(`checks-${process.pid}`, { nixConfig: ['build-users-group ='] });
    workerPool = new ServePool({
      maxIdle: 2,
      start: () => ServeSession.start({ command: 'nix-store', args: SERVE_ARGS, peer: 'the host store' }),
    });
    coordinatorPool = new ServePool({
      maxIdle: 2,
      start: () => {
        const line = coordinator.commandLine('nix-store', SERVE_ARGS);
        return ServeSession.start({ command: line.command, args: line.args, env: coordinator.environment(), peer: 'the coordinator store' });
      },
    });
  });

  after(async () => {
    await workerPool?.close();
    await coordinatorPool?.close();
    await coordinator?.destroy();
  });

  const signer = ReportSigner.fromPrivateKey(ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256 }).private);

  function checker(handBacks?: HandBackRegistry): CheckExecutor {
    const logger = createLogger({ name: 'test', level: 'silent' });
    const make = () =>
      new CheckExecutor({
        workerName: 'checker',
        nix: new WorkerNix({ nixOptions: NIX_OPTIONS, maxLogBytes: 1024 * 1024 }),
        mover: new StoreCopier({ local: workerPool, coordinator: coordinatorPool, logger }),
        publisher: handBacks === undefined ? new WorkerEventPublisher(client(), signer) : new HandBackPublisher(client(), signer, handBacks),
        redis: client(),
        logger,
      });
    if (handBacks !== undefined) return make();
    executor ??= make();
    return executor;
  }

  /** Instantiates and builds `attr` in the coordinator's store: the check job the coordinator would queue, with its outputs' NAR hashes there. */
  async function builtByCoordinator(attr: string, maxNarBytes = 10 * 1024 * 1024): Promise<CheckJob> {
    const [drvPath] = await nixInstantiate(fixture, [attr], { salt: freshSalt(), machine: coordinator });
    await coordinator.runChecked('nix-store', ['--realise', drvPath!, ...NIX_OPTIONS.flatMap(([k, v]) => ['--option', k, v])]);
    const drv = parseDerivation(drvPath!, readFileSync(coordinator.hostPathOf(drvPath!), 'utf8'));
    const build: BuildJob = { drvPath: drv.path, name: drv.name, system: drv.system, requiredFeatures: [], outputs: drv.outputs, inputPaths: drv.inputSrcs };
    const expected: Record<string, string> = {};
    for (const out of Object.values(drv.outputs)) expected[out] = (await coordinator.runChecked('nix-store', ['--query', '--hash', out])).trim();
    return { build, expected, maxNarBytes, background: false };
  }

  async function eventsOf(jobId: string): Promise<WorkerEvent[]> {
    const entries = (await client().xrange(redisKeys.workerEvents, '-', '+')) as Array<[string, string[]]>;
    return entries.map(([, f]) => workerEventSchema.parse(JSON.parse(f[1]!))).filter((e) => e.jobId === jobId);
  }

  function finished(events: WorkerEvent[]) {
    const event = events.find((e) => e.type === 'check-finished');
    assert.ok(event !== undefined && event.type === 'check-finished', `no check-finished among ${JSON.stringify(events)}`);
    return event;
  }

  /** The NAR the worker sent for `out`: its chunks, gunzipped. */
  async function sentNar(jobId: string, out: string): Promise<Buffer> {
    const chunks = await client().lrangeBuffer(redisKeys.checkNar(jobId, hashPart(out)), 0, -1);
    return gunzipSync(Buffer.concat(chunks));
  }

  const narHashOf = (nar: Buffer) => `sha256:${nixBase32(createHash('sha256').update(nar).digest())}`;

  it('reports the same NAR hash for a deterministic derivation, and sends no NAR', async () => {
    const check = await builtByCoordinator('same');
    const jobId = checkJobId(hashPart(check.build.drvPath), 0);
    assert.equal(await checker().execute(check, { jobId, attempt: 0 }), 'succeeded');
    const events = await eventsOf(jobId);
    assert.deepEqual(
      events.map((e) => e.type),
      ['started', 'check-finished'],
    );
    const report = finished(events);
    assert.equal(report.outcome, 'succeeded', report.error);
    assert.deepEqual(report.narHashes, check.expected);
    assert.equal(report.nars, undefined);
    assert.equal(hashOfCheckJobId(report.jobId), hashPart(check.build.drvPath));
  });

  it('reports the differing hash of a non-deterministic derivation, sends its NAR and removes what Nix left', async () => {
    const check = await builtByCoordinator('random');
    const out = check.build.outputs.out!;
    const jobId = checkJobId(hashPart(check.build.drvPath), 0);
    assert.equal(await checker().execute(check, { jobId, attempt: 0 }), 'succeeded');
    const report = finished(await eventsOf(jobId));
    assert.equal(report.outcome, 'succeeded', report.error);
    const rebuilt = report.narHashes?.[out];
    assert.ok(rebuilt !== undefined && rebuilt !== check.expected[out], `rebuilt ${rebuilt}, expected ${check.expected[out]}`);
    const nar = await sentNar(jobId, out);
    assert.equal(narHashOf(nar), rebuilt, 'the NAR sent is the rebuilt one');
    assert.deepEqual(report.nars?.[out], { chunks: 1, bytes: nar.length });
    const ttl = await client().ttl(redisKeys.checkNar(jobId, hashPart(out)));
    assert.ok(ttl > 3500 && ttl <= 3600, `expires in an hour, not ${ttl} s`);
    assert.equal(existsSync(`${out}.check`), false, 'the .check tree is removed');
    const kept = report.logTail.map((l) => /keeping build directory '([^']+)'/.exec(l)?.[1]).find((d) => d !== undefined);
    assert.ok(kept !== undefined, `Nix kept a build directory: ${report.logTail.join('\n')}`);
    assert.equal(existsSync(kept), false, `${kept} is removed`);
    assert.ok(report.timings.copyInBytes !== undefined && report.timings.copyInBytes > 0, 'the coordinator’s output and the .drv were copied in');
  });

  it('sends no NAR past the limit, and never reports an output it did not compare as the same', async () => {
    const check = await builtByCoordinator('twoRandom', 0);
    const jobId = checkJobId(hashPart(check.build.drvPath), 0);
    assert.equal(await checker().execute(check, { jobId, attempt: 0 }), 'succeeded');
    const report = finished(await eventsOf(jobId));
    assert.equal(report.outcome, 'succeeded', report.error);
    const reported = Object.entries(report.narHashes ?? {});
    assert.ok(reported.length >= 1, 'Nix compared at least the first output');
    for (const [out, hash] of reported) {
      assert.notEqual(hash, check.expected[out], `${out} is random: its rebuild cannot match`);
      const sent = report.nars?.[out];
      assert.ok(sent !== undefined && 'skipped' in sent, `${out}: ${JSON.stringify(sent)}`);
      assert.match(sent.skipped, /more than the coordinator's limit of 0/);
      assert.equal(existsSync(`${out}.check`), false);
      assert.equal((await client().exists(redisKeys.checkNar(jobId, hashPart(out)))) === 1, false);
    }
  });

  it('stops the rebuild when its signal fires, and a stopped check asked to be handed back is reported handed back', async () => {
    const check = await builtByCoordinator('slow');
    const jobId = checkJobId(hashPart(check.build.drvPath), 0);
    const handBacks = new HandBackRegistry();
    const canceller = new AbortController();
    const started = Date.now();
    const running = checker(handBacks).execute(check, { jobId, attempt: 0, signal: canceller.signal });
    await new Promise((r) => setTimeout(r, 1000));
    handBacks.request(jobId, 'real work waits');
    canceller.abort();
    assert.equal(await running, 'cancelled');
    assert.ok(Date.now() - started < 3500, `the 4 s rebuild was killed, not waited for (${Date.now() - started} ms)`);
    const events = await eventsOf(jobId);
    assert.deepEqual(
      events.map((e) => e.type),
      ['started', 'handed-back'],
    );
    assert.equal(handBacks.take(jobId), true, 'the job runner will return the job to its queue');
  });
});
