import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCacheUrl } from '@nixfarm/shared';

describe('cache URLs (--push-to, nixfarm push --to)', () => {
  it('takes file, http(s) and s3 caches, keeping Nix store parameters in the URL', () => {
    assert.deepEqual(parseCacheUrl('file:///var/cache/nix?compression=zstd'), {
      kind: 'file',
      url: 'file:///var/cache/nix?compression=zstd',
      location: '/var/cache/nix',
    });
    assert.deepEqual(parseCacheUrl('https://cache.example/nix/'), { kind: 'http', url: 'https://cache.example/nix/', location: 'https://cache.example/nix' });
    assert.deepEqual(parseCacheUrl('s3://my-cache?endpoint=http://127.0.0.1:9000&region=us-east-1'), {
      kind: 's3',
      url: 's3://my-cache?endpoint=http://127.0.0.1:9000&region=us-east-1',
      location: 'my-cache',
    });
  });

  const refused: Array<[string, RegExp]> = [
    ['cache.example', /^cache URL "cache\.example" does not parse: give one like file:\/\/\/dir/],
    ['ftp://cache.example/', /has the scheme ftp, which nixfarm cannot upload to/],
    ['file://host/dir', /must name an absolute directory, like file:\/\/\/var\/cache\/nix/],
    ['file:///', /must name an absolute directory/],
    ['s3://Not_A_Bucket', /must name an S3 bucket \(3-63 lower-case letters/],
    ['https://user:secret@cache.example/', /carries credentials: put them in a netrc file/],
  ];
  for (const [url, message] of refused) {
    it(`refuses ${url} with a message naming it`, () => {
      const parsed = parseCacheUrl(url);
      assert.ok('error' in parsed, JSON.stringify(parsed));
      assert.match(parsed.error, message);
      if (!url.includes('@')) assert.ok(parsed.error.includes(JSON.stringify(url)));
    });
  }

  it('never repeats the credentials of a URL that carries them', () => {
    const parsed = parseCacheUrl('https://user:secret@cache.example/');
    assert.ok('error' in parsed);
    assert.ok(!parsed.error.includes('secret') && !parsed.error.includes('user'), parsed.error);
    assert.match(parsed.error, /"https:\/\/\*\*\*:\*\*\*@cache\.example\/"/);
  });
});
