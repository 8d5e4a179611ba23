import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { coordinatorConfigSchema, parseSentinelUrl, redactRedisUrl, redisUserOf, sentinelUrlOf } from '@nixfarm/shared';

describe('redis+sentinel:// URLs', () => {
  it('names the user a Sentinel URL logs in as, without its password, as a plain URL does', () => {
    assert.equal(redisUserOf('redis+sentinel://farm:pw@h1:1,h2:2/m'), '"farm" at redis+sentinel://farm:***@h1:1,h2:2/m');
    assert.equal(redisUserOf('rediss+sentinel://h1:1/m'), '"default" at rediss+sentinel://h1:1/m');
    assert.equal(redisUserOf('redis://farm:pw@h:1'), '"farm" at redis://farm:***@h:1');
  });
  it('gives the sentinels, the master, the db and the passwords', () => {
    assert.deepEqual(parseSentinelUrl('redis+sentinel://farm:s3cret@10.0.0.1:26379,sentinel-b,[::1]:26380/nixfarm?db=2&sentinelPassword=x'), {
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: 'sentinel-b', port: 26379 },
        { host: '::1', port: 26380 },
      ],
      master: 'nixfarm',
      tls: false,
      db: 2,
      username: 'farm',
      password: 's3cret',
      sentinelPassword: 'x',
    });
    assert.deepEqual(parseSentinelUrl('redis+sentinel://:pw@h:1/m'), { sentinels: [{ host: 'h', port: 1 }], master: 'm', tls: false, password: 'pw' });
  });

  it('rediss+sentinel:// means TLS to the sentinels and the primary, from the URL or the flags, in a config too', () => {
    assert.deepEqual(parseSentinelUrl('rediss+sentinel://:pw@h:1,h:2/m'), {
      sentinels: [
        { host: 'h', port: 1 },
        { host: 'h', port: 2 },
      ],
      master: 'm',
      tls: true,
      password: 'pw',
    });
    const url = sentinelUrlOf(['10.0.0.1:26379', '10.0.0.2:26379'], 'nixfarm', true);
    assert.equal(url, 'rediss+sentinel://10.0.0.1:26379,10.0.0.2:26379/nixfarm');
    assert.equal(coordinatorConfigSchema.parse({ stateDir: '/s', redisUrl: url, redisCaFile: '/ca.pem' }).redisUrl, url);
    assert.equal(redactRedisUrl('rediss+sentinel://u:s3cret@h:1/m?sentinelPassword=x'), 'rediss+sentinel://u:***@h:1/m?sentinelPassword=***');
  });

  it('names the part that is wrong', () => {
    const cases: Array<[string, RegExp]> = [
      ['redis+sentinel://h1:1,h2:2', /the master name is missing after the hosts \(\/MASTER\)/],
      ['redis+sentinel://h1:1,,h2:2/m', /a sentinel address is empty/],
      ['redis+sentinel://h1:x/m', /the sentinel address "h1:x" is not host:port/],
      ['redis+sentinel://h1:70000/m', /the sentinel port in "h1:70000" must be from 1 to 65535/],
      ['redis+sentinel://h1/m?db=two', /db must be a database number \(like \?db=0\), got "two"/],
      ['redis+sentinel://h1/m?tls=1', /unknown query parameter "tls"/],
      ['redis+sentinel://h1/a b', /the master name "a b" may hold only/],
    ];
    for (const [url, message] of cases) {
      assert.throws(() => parseSentinelUrl(url), message, url);
      assert.throws(() => parseSentinelUrl(url), /a Sentinel URL looks like redis\+sentinel:\/\/\[user:pass@\]host1:port1,host2:port2\/MASTER/, url);
    }
  });

  it('is what the flags --sentinel and --sentinel-master make, and what a config accepts', () => {
    const url = sentinelUrlOf(['10.0.0.1:26379', '10.0.0.2:26379'], 'nixfarm');
    assert.equal(url, 'redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/nixfarm');
    assert.equal(coordinatorConfigSchema.parse({ stateDir: '/s', redisUrl: url }).redisUrl, url);
    const bad = coordinatorConfigSchema.safeParse({ stateDir: '/s', redisUrl: 'redis+sentinel://h:1' });
    assert.equal(bad.success, false);
    assert.match(JSON.stringify(bad.error?.issues), /the master name is missing/);
  });

  it('hides the passwords in messages', () => {
    assert.equal(
      redactRedisUrl('redis+sentinel://farm:s3cret@h:1,h:2/m?db=1&sentinelPassword=other'),
      'redis+sentinel://farm:***@h:1,h:2/m?db=1&sentinelPassword=***',
    );
  });
});
