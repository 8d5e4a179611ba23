import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { Redis } from 'ioredis';
import {
  RedisTlsError,
  RedisTlsSettingError,
  connectRedis,
  diagnoseRedisTlsFailure,
  loadRedisTls,
  type RedisTlsFailureCause,
  type RedisTlsFiles,
} from '@nixfarm/shared';
import { freePort } from '../harness/free-port.js';
import { startPrivateRedis, type PrivateRedis } from '../harness/private-redis.js';
import { makeTestCa, type TestCa } from '../harness/test-ca.js';

/**
 * connectRedis over TLS against Debian's redis-server with --tls-port on
 * loopback and certificates of a CA the test makes with openssl: a good
 * connection, and one message per cause for each way the settings can be
 * wrong, said once and without the wait-and-retry loop an unreachable Redis gets.
 */

const quietLogger = pino({ level: 'silent' });
/** A wrong setting is said at once; the slowest cause (rediss:// to a plain port) waits out ioredis's 10 s connect timeout, then one probe. */
const GIVE_UP_WITHIN_MS = 20_000;

interface Attempt {
  error: unknown;
  /** the wait's messages ("cannot reach Redis ..., retrying"): none for a TLS cause */
  notices: string[];
  ms: number;
}

describe('Redis over TLS', () => {
  let ca: TestCa;
  /** requires client certificates of the CA (tls-auth-clients yes) */
  let good: PrivateRedis;
  let expired: PrivateRedis;
  let wrongHost: PrivateRedis;
  let plain: PrivateRedis;
  const clients: Redis[] = [];

  before(async () => {
    ca = await makeTestCa();
    [good, expired, wrongHost, plain] = await Promise.all([
      startPrivateRedis({ tls: { ca } }),
      startPrivateRedis({ tls: { ca, serverCert: 'expired', clientCerts: 'optional' } }),
      startPrivateRedis({ tls: { ca, serverCert: 'wrongHost', clientCerts: 'optional' } }),
      startPrivateRedis({}),
    ]);
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await Promise.all([good, expired, wrongHost, plain].map((s) => s?.stop()));
  });

  const withClientCert = (): RedisTlsFiles => ({ redisCaFile: ca.caCert, redisCertFile: ca.client.cert, redisKeyFile: ca.client.key });
  const portOf = (server: PrivateRedis): number => Number(new URL(server.url).port);

  async function attempt(url: string, tls: RedisTlsFiles): Promise<Attempt> {
    const notices: string[] = [];
    const started = Date.now();
    // The bound: an attempt that loops (retrying a cause it cannot fix) is stopped here and fails the assertions below.
    const signal = AbortSignal.timeout(GIVE_UP_WITHIN_MS + 5000);
    try {
      clients.push(await connectRedis({ url, tls, logger: quietLogger, onNotice: (m) => notices.push(m), firstRetryMs: 100, signal }));
      return { error: undefined, notices, ms: Date.now() - started };
    } catch (error) {
      return { error, notices, ms: Date.now() - started };
    }
  }

  /** The attempt ended with one TLS error of this cause, at once, with no retry notice. */
  function assertTlsFailure(result: Attempt, cause: RedisTlsFailureCause, message: RegExp): void {
    assert.ok(result.error instanceof RedisTlsError, `a RedisTlsError, got ${String(result.error)}`);
    assert.equal(result.error.tlsCause, cause);
    assert.equal(result.error.retryable, false);
    assert.match(result.error.message, message);
    assert.deepEqual(result.notices, [], 'said once, as the error: no "retrying" notice');
    assert.ok(result.ms < GIVE_UP_WITHIN_MS, `gave up within ${GIVE_UP_WITHIN_MS} ms (took ${result.ms} ms)`);
  }

  it('connects over rediss:// with the CA and a client certificate, and so do its duplicates (what BullMQ uses)', async () => {
    const result = await attempt(good.url, withClientCert());
    assert.equal(result.error, undefined);
    const redis = clients.at(-1)!;
    assert.equal(await redis.ping(), 'PONG');
    const duplicate = redis.duplicate();
    clients.push(duplicate);
    assert.equal(await duplicate.ping(), 'PONG');
    // localhost is in the certificate too: the name is checked against the URL's host, and it matches
    const byName = await attempt(`rediss://localhost:${portOf(good)}`, withClientCert());
    assert.equal(byName.error, undefined);
  });

  it('a plain redis:// URL to a TLS port: the server speaks TLS, use rediss://', async () => {
    const result = await attempt(`redis://127.0.0.1:${portOf(good)}`, {});
    assertTlsFailure(
      result,
      'plain-to-tls-port',
      new RegExp(
        `^the server at redis://127\\.0\\.0\\.1:${portOf(good)} speaks TLS and closed the plain connection: use rediss://127\\.0\\.0\\.1:${portOf(good)} \\(--redis\\)`,
      ),
    );
  });

  it('a rediss:// URL to a plain port: the server does not speak TLS', async () => {
    const result = await attempt(`rediss://127.0.0.1:${portOf(plain)}`, { redisCaFile: ca.caCert });
    assertTlsFailure(
      result,
      'tls-to-plain-port',
      /^the server at rediss:\/\/127\.0\.0\.1:\d+ does not speak TLS: it answers plain Redis; use redis:\/\/127\.0\.0\.1:\d+/,
    );
  });

  it('an unknown CA: names the CA file given, or says none was', async () => {
    const other = await attempt(good.url, { ...withClientCert(), redisCaFile: ca.otherCaCert });
    assertTlsFailure(
      other,
      'unknown-ca',
      new RegExp(
        `is not signed by a CA in --redis-ca ${ca.otherCaCert} \\((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\\): give the CA that signed it with --redis-ca FILE`,
      ),
    );
    const none = await attempt(good.url, { redisCertFile: ca.client.cert, redisKeyFile: ca.client.key });
    assertTlsFailure(none, 'unknown-ca', /is not signed by a CA in the system's CAs \(no --redis-ca was given\)/);
  });

  it('an expired server certificate: says so, and when it expired', async () => {
    const result = await attempt(expired.url, withClientCert());
    assertTlsFailure(
      result,
      'certificate-expired',
      /^the certificate of the Redis server at rediss:\/\/127\.0\.0\.1:\d+ has expired \(on Jan {1,2}2 00:00:00 2020 GMT\) \(CERT_HAS_EXPIRED\): renew it/,
    );
  });

  it('a certificate for another host name: says which names it has', async () => {
    const result = await attempt(wrongHost.url, withClientCert());
    assertTlsFailure(result, 'host-name-mismatch', /is not for 127\.0\.0\.1 \(it names DNS:wrong\.example\) \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
  });

  it('a server that requires a client certificate, and none was given', async () => {
    const result = await attempt(good.url, { redisCaFile: ca.caCert });
    assertTlsFailure(result, 'client-certificate-required', /requires a client certificate and none was given .*: give --redis-cert FILE and --redis-key FILE/);
  });

  it('a client certificate the server does not trust: names the certificate file', async () => {
    const result = await attempt(good.url, { redisCaFile: ca.caCert, redisCertFile: ca.strangerClient.cert, redisKeyFile: ca.strangerClient.key });
    assertTlsFailure(
      result,
      'client-certificate-rejected',
      new RegExp(
        `did not accept the client certificate --redis-cert ${ca.strangerClient.cert} .*: it must be valid and signed by a CA in the server's tls-ca-cert-file`,
      ),
    );
  });

  it('a reset instead of the alert (the server hung up before its alert was read) is still named, by one probe', async () => {
    // Which of the two the client sees is a race; here the reset is given, so the probe's path is the one taken.
    const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    for (const [files, cause] of [
      [{ redisCaFile: ca.caCert }, 'client-certificate-required'],
      [{ redisCaFile: ca.caCert, redisCertFile: ca.strangerClient.cert, redisKeyFile: ca.strangerClient.key }, 'client-certificate-rejected'],
    ] as const) {
      const tls = await loadRedisTls(good.url, good.url, files);
      const named = await diagnoseRedisTlsFailure(reset, { url: good.url, shownUrl: good.url, tls, setting: '--redis' });
      assert.equal(named?.tlsCause, cause);
    }
    // with a certificate the server takes, a reset is no TLS cause: the wait goes on
    const tls = await loadRedisTls(good.url, good.url, withClientCert());
    assert.equal(await diagnoseRedisTlsFailure(reset, { url: good.url, shownUrl: good.url, tls, setting: '--redis' }), undefined);
  });

  it('a server not up yet is waited for over TLS too, then connected to', async () => {
    const port = await freePort();
    const starting = (async () => {
      await new Promise((resolve) => setTimeout(resolve, 1500));
      return startPrivateRedis({ port, tls: { ca } });
    })();
    const result = await attempt(`rediss://127.0.0.1:${port}`, withClientCert());
    const server = await starting;
    try {
      assert.equal(result.error, undefined, `connected once the server was up: ${String(result.error)}`);
      assert.equal(result.notices.length >= 1, true, 'said once that it could not reach Redis yet');
      assert.match(result.notices[0]!, /cannot reach Redis at rediss:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\); retrying/);
    } finally {
      // its client goes first: one left connected would try to reconnect to the stopped server
      if (result.error === undefined) clients.pop()?.disconnect();
      await server.stop();
    }
  });

  it('bad TLS settings are named before any connection: missing pair, unreadable, not PEM, wrong key, TLS files with redis://', async () => {
    const notPem = join(ca.dir, 'not-pem.txt');
    writeFileSync(notPem, 'hello\n');
    const cases: Array<[string, RedisTlsFiles, RegExp]> = [
      [good.url, { redisCertFile: ca.client.cert }, /^--redis-cert and --redis-key go together .*only --redis-cert .*client\.crt was given$/],
      [good.url, { redisKeyFile: ca.client.key }, /^--redis-cert and --redis-key go together .*only --redis-key .*client\.key was given$/],
      [good.url, { redisCaFile: join(ca.dir, 'missing.crt') }, /^cannot read --redis-ca .*missing\.crt: ENOENT/],
      [good.url, { redisCaFile: notPem }, /^--redis-ca .*not-pem\.txt is not a PEM certificate/],
      [good.url, { redisCertFile: ca.client.cert, redisKeyFile: notPem }, /^--redis-key .*not-pem\.txt is not a PEM private key/],
      [
        good.url,
        { redisCertFile: ca.client.cert, redisKeyFile: ca.server.key },
        /^--redis-key .*server\.key is not the private key of --redis-cert .*client\.crt/,
      ],
      [
        plain.url,
        { redisCaFile: ca.caCert },
        /^--redis-ca is for a connection over TLS, but the Redis URL redis:\/\/127\.0\.0\.1:\d+ is plain redis:\/\/: use rediss:\/\//,
      ],
    ];
    for (const [url, tls, message] of cases) {
      const result = await attempt(url, tls);
      assert.ok(result.error instanceof RedisTlsSettingError, `${JSON.stringify(tls)}: a RedisTlsSettingError, got ${String(result.error)}`);
      assert.match(result.error.message, message);
      assert.deepEqual(result.notices, []);
    }
  });
});
