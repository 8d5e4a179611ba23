import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import ssh2 from 'ssh2';
import {
  LOG_FIELD,
  REPORT_SIGNATURE_FIELD,
  ReportSigner,
  logEntryPayload,
  hashPart,
  redisKeys,
  workerEventSchema,
  type BuildFinishedEvent,
  type DerivationView,
  type WorkerEvent,
} from '@nixfarm/shared';
import { pollFor } from '../harness/poll.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { chain, freshSalt, outputPathsOf, nixInstantiate } from '../harness/nix-fixtures.js';
import { reportKeyPair } from '../harness/report-keys.js';
import type { TestFarm } from '../harness/test-farm.js';

/**
 * Workers cannot speak for each other (issue 19, point 3), on a real farm: a
 * report forged with an unauthorised key, one replayed from the stream, and one
 * signed by a real worker's key but naming the other worker are each dropped,
 * logged and counted, while the build they lie about ends as its real worker
 * reports it. `nixfarm authorize --revoke` in the middle of a build queues it
 * again for the other worker, and the revoked worker's later reports are dropped.
 */

type Entry = [id: string, fields: string[]];

function eventOf([, fields]: Entry): WorkerEvent {
  return workerEventSchema.parse(JSON.parse(fields[fields.indexOf('e') + 1]!));
}

/** One `nixfarm_reports_rejected_total` sample per reason. */
async function rejected(farm: TestFarm): Promise<Map<string, number>> {
  const text = await (await fetch(new URL('/metrics', farm.address.httpUrl), { headers: farm.authHeaders('read') })).text();
  const counts = new Map<string, number>();
  for (const match of text.matchAll(/^nixfarm_reports_rejected_total\{reason="([a-z-]+)"\} (\d+)/gm)) counts.set(match[1]!, Number(match[2]));
  return counts;
}

/** The coordinator's log lines for dropped reports, parsed. */
function droppedLines(farm: TestFarm): Array<{ reason: string; claimedWorker: string; keyFingerprint?: string; entryId: string }> {
  return farm
    .tail('coordinator', 200_000)
    .split('\n')
    .filter((l) => l.includes('worker report dropped'))
    .map((l) => JSON.parse(l) as { reason: string; claimedWorker: string; keyFingerprint?: string; entryId: string });
}

describe('signed worker reports (real farm)', () => {
  after(() => redis?.disconnect());
  const farm = farmForSuite({ workers: [{ name: 'alpha' }, { name: 'beta' }] });
  let redis: Redis;

  before(async () => {
    redis = new Redis(farm.redis.url, { maxRetriesPerRequest: null });
    await farm.waitForWorkers(['alpha', 'beta']);
  });

  const post = async (event: WorkerEvent, signature?: string): Promise<string> => {
    const payload = JSON.stringify(event);
    const fields = signature === undefined ? ['e', payload] : ['e', payload, REPORT_SIGNATURE_FIELD, signature];
    return (await redis.xadd(redisKeys.workerEvents, '*', ...fields))!;
  };

  const workerKeyText = (name: string): string => readFileSync(join(farm.workers.get(name)!.machine.stateDir, 'worker', 'id_ed25519'), 'utf8');
  const workerSigner = (name: string): ReportSigner => ReportSigner.fromPrivateKey(workerKeyText(name));

  /** Starts a chain of sleeping builds; resolves once one of them runs, with a way to read the run's rows. */
  async function runningChain(n: number, sleepSeconds: number) {
    const fixture = chain(n, { sleepSeconds });
    const salt = freshSalt();
    const { build, runId, rows } = await farm.submitInBackground([fixture.file, '-A', 'all', '--argstr', 'salt', salt]);
    const running = await pollFor(
      async () => (await rows()).find((d) => d.status === 'running' && d.worker !== undefined),
      60_000,
      () => farm.diagnostics(),
    );
    const [drv] = await nixInstantiate(fixture.file, ['all'], { salt });
    return { build, runId, rows, running, drv: drv! };
  }

  const failedReport = (running: DerivationView, worker: string): BuildFinishedEvent => ({
    type: 'finished',
    drvPath: running.drvPath,
    worker,
    jobId: hashPart(running.drvPath),
    attempt: 0,
    outcome: 'failed',
    logTail: ['forged'],
    exitCode: 1,
    timings: { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 },
    at: Date.now(),
  });

  async function expectSuccess(run: Awaited<ReturnType<typeof runningChain>>): Promise<DerivationView[]> {
    const result = await run.build.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    for (const out of await outputPathsOf(run.drv)) assert.ok(existsSync(out), `${out} is valid in the coordinator's store`);
    const rows = await run.rows();
    assert.ok(
      rows.every((r) => r.status === 'succeeded'),
      JSON.stringify(rows.map((r) => [r.name, r.status])),
    );
    return rows;
  }

  it('drops a report forged with an unauthorised key and an unsigned one, counts and logs them, and the build ends as its worker reports it', async () => {
    const before = await rejected(farm);
    const run = await runningChain(2, 4);
    const worker = run.running.worker!;
    const intruder = await reportKeyPair('intruder');
    const forged = failedReport(run.running, worker);
    const forgedId = await post(forged, intruder.signer.sign(redisKeys.workerEvents, worker, JSON.stringify(forged)));
    const unsignedId = await post({ ...forged, at: Date.now() });
    // A signature lifted onto another payload does not hold either.
    const signer = await reportKeyPair('another');
    const liftedId = await post({ ...forged, outcome: 'timed-out' }, signer.signer.sign(redisKeys.workerEvents, worker, JSON.stringify(forged)));
    // A log batch is a report too: one written in the worker's name with the intruder's key is neither shown nor stored.
    const logStream = redisKeys.buildLog(hashPart(run.running.drvPath));
    const tag = [LOG_FIELD.worker, worker, LOG_FIELD.jobId, hashPart(run.running.drvPath), LOG_FIELD.attempt, '0', LOG_FIELD.lines, 'FORGED LOG LINE'];
    await redis.xadd(logStream, '*', ...tag, REPORT_SIGNATURE_FIELD, intruder.signer.sign(logStream, worker, logEntryPayload(tag)));

    const rows = await expectSuccess(run);
    const row = rows.find((r) => r.drvPath === run.running.drvPath)!;
    assert.equal(row.attempts, 1, 'the forged failure caused no retry');
    assert.deepEqual(row.builtBy, [worker]);
    const lines = await pollFor(
      () => {
        const l = droppedLines(farm).filter((x) => [forgedId, unsignedId, liftedId].includes(x.entryId));
        return l.length === 3 && l;
      },
      10_000,
      () => farm.tail('coordinator'),
    );
    const byId = new Map(lines.map((l) => [l.entryId, l]));
    assert.equal(byId.get(forgedId)?.reason, 'unknown-key');
    assert.equal(byId.get(forgedId)?.keyFingerprint, intruder.fingerprint);
    assert.equal(byId.get(forgedId)?.claimedWorker, worker);
    assert.equal(byId.get(unsignedId)?.reason, 'unsigned');
    assert.equal(byId.get(liftedId)?.reason, 'unknown-key');
    const log = await farm.cli(['log', run.running.drvPath]);
    assert.equal(log.exitCode, 0, log.stderr);
    assert.doesNotMatch(log.stdout, /FORGED LOG LINE/);
    assert.match(log.stdout, /link-0/, 'the real lines are there');
    const after = await rejected(farm);
    assert.equal((after.get('unknown-key') ?? 0) - (before.get('unknown-key') ?? 0), 3, 'two events and a log batch');
    assert.equal((after.get('unsigned') ?? 0) - (before.get('unsigned') ?? 0), 1);
  });

  it('drops a replayed started and finished report (the same signed entries posted again)', async () => {
    const before = await rejected(farm);
    const run = await runningChain(1, 1);
    await expectSuccess(run);
    const hash = hashPart(run.running.drvPath);
    const entries = ((await redis.xrange(redisKeys.workerEvents, '-', '+')) as Entry[]).filter((e) => hashPart(eventOf(e).drvPath) === hash);
    const originals = ['started', 'finished'].map((type) => entries.find((e) => eventOf(e).type === type)!);
    assert.ok(
      originals.every((e) => e?.[1].includes(REPORT_SIGNATURE_FIELD)),
      'the real reports are signed',
    );
    const replayIds: string[] = [];
    for (const [, fields] of originals) replayIds.push((await redis.xadd(redisKeys.workerEvents, '*', ...fields))!);
    const lines = await pollFor(
      () => {
        const l = droppedLines(farm).filter((x) => replayIds.includes(x.entryId));
        return l.length === 2 && l;
      },
      10_000,
      () => farm.tail('coordinator'),
    );
    assert.deepEqual(
      lines.map((l) => l.reason),
      ['replayed', 'replayed'],
    );
    const after = await rejected(farm);
    assert.equal((after.get('replayed') ?? 0) - (before.get('replayed') ?? 0), 2);
    const row = (await run.rows()).find((r) => r.drvPath === run.running.drvPath)!;
    assert.equal(row.status, 'succeeded');
    assert.equal(row.builds, 1, 'the replayed success was not applied again');
  });

  it("drops a report signed by one worker's authorised key that names the other worker", async () => {
    const before = await rejected(farm);
    const run = await runningChain(2, 4);
    const victim = run.running.worker!;
    const liar = victim === 'alpha' ? 'beta' : 'alpha';
    const forged = failedReport(run.running, victim);
    const id = await post(forged, workerSigner(liar).sign(redisKeys.workerEvents, victim, JSON.stringify(forged)));
    const rows = await expectSuccess(run);
    const row = rows.find((r) => r.drvPath === run.running.drvPath)!;
    assert.equal(row.attempts, 1);
    assert.deepEqual(row.builtBy, [victim]);
    const line = await pollFor(
      () => droppedLines(farm).find((x) => x.entryId === id),
      10_000,
      () => farm.tail('coordinator'),
    );
    assert.equal(line.reason, 'worker-bound-to-another-key');
    assert.equal(line.claimedWorker, victim);
    const after = await rejected(farm);
    assert.equal((after.get('worker-bound-to-another-key') ?? 0) - (before.get('worker-bound-to-another-key') ?? 0), 1);
  });

  it('revokes a worker mid-build: its build is queued again and built by the other worker, its later reports are dropped, the run succeeds', async () => {
    const before = await rejected(farm);
    const run = await runningChain(2, 8);
    const revoked = run.running.worker!;
    const other = revoked === 'alpha' ? 'beta' : 'alpha';
    const fingerprint = workerSigner(revoked).fingerprint;
    const result = await farm.cli(['authorize', '--revoke', '--state-dir', farm.coordinatorStateDir, fingerprint]);
    assert.equal(result.exitCode, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`revoked ${fingerprint.replace(/[+/]/g, '\\$&')}`));
    const again = await farm.cli(['authorize', '--revoke', '--state-dir', farm.coordinatorStateDir, fingerprint]);
    assert.notEqual(again.exitCode, 0);
    assert.match(again.stderr, /is not in .*authorized_keys: nothing revoked/);

    const rows = await expectSuccess(run);
    const row = rows.find((r) => r.drvPath === run.running.drvPath)!;
    assert.deepEqual(row.builtBy, [other], 'built by the other worker');
    assert.ok(
      rows.every((r) => r.builtBy?.every((w) => w === other) ?? true),
      JSON.stringify(rows.map((r) => r.builtBy)),
    );
    // The revoked worker stopped its build; that report (cancelled) is dropped: its key is no longer authorised.
    await pollFor(
      async () => ((await rejected(farm)).get('unknown-key') ?? 0) > (before.get('unknown-key') ?? 0),
      20_000,
      () => farm.tail('coordinator'),
    );
    assert.ok(
      droppedLines(farm).some((l) => l.claimedWorker === revoked && l.keyFingerprint === fingerprint && l.reason === 'unknown-key'),
      farm.tail('coordinator'),
    );
    assert.match(farm.tail(revoked, 400), /worker key revoked by the coordinator/);
    // The store endpoint refuses it too.
    const refusal = await new Promise<Error & { level?: string }>((resolve, reject) => {
      const client = new ssh2.Client();
      client.on('ready', () => {
        client.end();
        reject(new Error('the revoked key still logs in'));
      });
      client.on('error', (error: Error & { level?: string }) => resolve(error));
      client.connect({ host: '127.0.0.1', port: farm.address.sshPort, username: 'nixfarm', privateKey: workerKeyText(revoked), hostVerifier: () => true });
    });
    assert.equal(refusal.level, 'client-authentication');
  });
});
