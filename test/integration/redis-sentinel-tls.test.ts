import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { connectRedis, createLogger, type NixfarmError, sentinelUrlOf } from '@nixfarm/shared';
import { SentinelRedis } from '../harness/sentinel-redis.js';
import { makeTestCa, type TestCa } from '../harness/test-ca.js';
import { pollFor } from '../harness/poll.js';

const logger = createLogger({ name: 'test', level: 'silent' });

/**
 * Sentinel and TLS together, on real processes: a primary, a replica and
 * three sentinels that speak only TLS (replication and the sentinels' links
 * too) and want a client certificate of the test CA.
 */
describe('Redis through Sentinel over TLS (rediss+sentinel://)', () => {
  let ca: TestCa;
  let set: SentinelRedis;
  before(async () => {
    ca = await makeTestCa();
    set = await SentinelRedis.start({ master: 'farm', tls: ca });
  });
  after(async () => {
    await set?.stop();
  });

  const clientCert = (): { redisCertFile: string; redisKeyFile: string } => ({ redisCertFile: ca.client.cert, redisKeyFile: ca.client.key });

  it('connects with the CA and client certificate, writes to the primary, and the write reaches the replica over TLS', async () => {
    assert.match(set.url, /^rediss\+sentinel:\/\/127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+\/farm$/);
    const redis: Redis = await connectRedis({ url: set.url, logger, tls: { redisCaFile: ca.caCert, ...clientCert() } });
    try {
      await redis.set('over-tls', 'yes');
      assert.equal(await redis.get('over-tls'), 'yes');
      assert.equal(await redis.wait(1, 5000), 1);
      assert.deepEqual(await redis.config('GET', 'port'), ['port', '0'], 'the primary has no plain port');
    } finally {
      redis.disconnect();
    }
  });

  it('refuses a CA that did not sign the sentinels, at once, naming the sentinel and --redis-ca', async () => {
    const notices: string[] = [];
    await assert.rejects(
      connectRedis({ url: set.url, logger, firstRetryMs: 100, onNotice: (m) => notices.push(m), tls: { redisCaFile: ca.otherCaCert, ...clientCert() } }),
      (error: NixfarmError) => {
        assert.equal(error.code, 'redis-tls-failed');
        assert.match(
          error.message,
          /the certificate of the Redis server at rediss:\/\/127\.0\.0\.1:\d+ \(a sentinel of rediss\+sentinel:\/\/.*\/farm\) is not signed by a CA in --redis-ca .*other-ca\.crt/,
        );
        return true;
      },
    );
    assert.deepEqual(notices, [], 'no retry loop: said once, before any "cannot reach"');
  });

  it('refuses TLS files with a plain redis+sentinel:// URL, pointing to rediss+sentinel://', async () => {
    const plain = sentinelUrlOf(
      set.sentinelPorts.map((p) => `127.0.0.1:${p}`),
      'farm',
    );
    await assert.rejects(
      connectRedis({ url: plain, logger, tls: { redisCaFile: ca.caCert } }),
      /--redis-ca is for a connection over TLS, .*rediss\+sentinel:\/\//,
    );
  });

  it('follows a failover over TLS: the replica is promoted and takes writes', async () => {
    const redis: Redis = await connectRedis({
      url: set.url,
      logger,
      tls: { redisCaFile: ca.caCert, ...clientCert() },
      redisOptions: { maxRetriesPerRequest: null },
    });
    try {
      await redis.set('before', '1');
      assert.equal(await redis.wait(1, 5000), 1);
      set.killPrimary();
      await pollFor(
        async () => ((await set.masterAddress()).port === set.replica.port ? true : undefined),
        30_000,
        () => 'the sentinels to promote the replica',
        200,
      );
      await redis.set('after', '2');
      assert.equal(await redis.get('before'), '1');
      assert.equal(await redis.get('after'), '2');
    } finally {
      redis.disconnect();
    }
  });
});
