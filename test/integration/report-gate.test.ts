import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { ReportGate, type PostedReport } from '@nixfarm/coordinator';
import { redisKeys } from '@nixfarm/shared';
import { privateRedisForSuite } from '../harness/private-redis.js';
import { authorizedKeysWith, reportKeyPair, type ReportKeyPair } from '../harness/report-keys.js';

/**
 * The coordinator's report gate on a real redis-server: what it remembers
 * (each session's highest sequence, which key speaks for which worker) lives
 * in Redis and is written only with the batch's acknowledgement, so a batch
 * applied again after a crash is judged alike, and a new gate (a restarted
 * coordinator) still refuses a replay.
 */
describe('the report gate', () => {
  const client = privateRedisForSuite('report gate test');
  const logger = pino({ level: 'silent' });
  let id = 0;

  const report = (key: ReportKeyPair, worker: string, n = 0): PostedReport => {
    const payload = JSON.stringify({ n, worker });
    return {
      id: `${Date.now()}-${id++}`,
      stream: redisKeys.workerEvents,
      payload,
      signature: key.signer.sign(redisKeys.workerEvents, worker, payload),
      worker,
    };
  };
  const commit = async (admission: Awaited<ReturnType<ReportGate['admit']>>) => {
    const multi = client().multi();
    admission.commit(multi);
    await multi.exec();
  };

  it('admits each signed report once, across a restart; an uncommitted batch is judged again alike', async () => {
    const key = await reportKeyPair('w1');
    const keys = await authorizedKeysWith(key);
    const batch = [report(key, 'w1', 1), report(key, 'w1', 2), report(key, 'w1', 3)];
    const first = new ReportGate({ redis: client(), keys, logger });
    assert.deepEqual((await first.admit(batch)).admitted, [true, true, true]);
    // The coordinator died before acknowledging: the same batch is read again and admitted again.
    const again = await first.admit(batch);
    assert.deepEqual(again.admitted, [true, true, true]);
    await commit(again);
    // A restarted coordinator (a new gate) refuses every one of them, and a duplicate inside one batch too.
    const restarted = new ReportGate({ redis: client(), keys, logger });
    const replay = await restarted.admit([batch[1]!, batch[2]!]);
    assert.deepEqual(replay.admitted, [false, false]);
    assert.deepEqual(
      replay.rejected.map((r) => r.reason),
      ['replayed', 'replayed'],
    );
    const next = report(key, 'w1', 4);
    const duplicated = await restarted.admit([next, { ...next, id: `${Date.now()}-${id++}` }]);
    assert.deepEqual(duplicated.admitted, [true, false]);
  });

  it('binds a worker name to the key of its first report; another key is refused, until the bound key is no longer authorised', async () => {
    const [a, b] = [await reportKeyPair('a'), await reportKeyPair('b')];
    const keys = await authorizedKeysWith(a, b);
    const gate = new ReportGate({ redis: client(), keys, logger });
    const first = await gate.admit([report(a, 'bound-worker'), report(b, 'bound-worker')]);
    assert.deepEqual(first.admitted, [true, false]);
    assert.equal(first.rejected[0]?.reason, 'worker-bound-to-another-key');
    await commit(first);
    assert.equal(await client().hget(redisKeys.workerKeys, 'bound-worker'), a.fingerprint);
    assert.deepEqual((await gate.admit([report(b, 'bound-worker')])).admitted, [false]);
    // The worker got a new key and the operator revoked the old one: the new key takes over the name.
    await keys.remove(a.fingerprint);
    const moved = await gate.admit([report(b, 'bound-worker'), report(a, 'bound-worker')]);
    assert.deepEqual(moved.admitted, [true, false]);
    assert.equal(moved.rejected[0]?.reason, 'unknown-key');
    await commit(moved);
    assert.equal(await client().hget(redisKeys.workerKeys, 'bound-worker'), b.fingerprint);
  });

  it("keeps the coordinator's own key for its local builder, and no worker key for it", async () => {
    const [worker, own] = [await reportKeyPair('w'), await reportKeyPair('coordinator')];
    const gate = new ReportGate({ redis: client(), keys: await authorizedKeysWith(worker), own: own.signer.reportKey, logger });
    const admission = await gate.admit([report(own, 'coordinator'), report(worker, 'coordinator'), report(own, 'some-worker')]);
    assert.deepEqual(admission.admitted, [true, false, false]);
    assert.deepEqual(
      admission.rejected.map((r) => r.reason),
      ['worker-bound-to-another-key', 'worker-bound-to-another-key'],
    );
  });
});
