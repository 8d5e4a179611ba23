import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { downloadCheckNar } from '@nixfarm/coordinator';
import { createLogger, redisKeys, type NixfarmError } from '@nixfarm/shared';
import { privateRedisForSuite } from '../harness/private-redis.js';

/**
 * Bringing a rebuilt output back from Redis as the worker leaves it there:
 * one gzip stream of `nix-store --dump`, cut into chunks, in a LIST. On a
 * private redis-server with real nix-store.
 */
const logger = createLogger({ name: 'test', level: 'silent' });
const root = mkdtempSync(join(tmpdir(), 'nixfarm-nar-download-'));
after(() => rmSync(root, { recursive: true, force: true }));

function dumpOf(path: string): Buffer {
  const dump = spawnSync('nix-store', ['--dump', path], { maxBuffer: 64 * 1024 * 1024 });
  assert.equal(dump.status, 0, String(dump.stderr));
  return dump.stdout;
}

/** The gzip-compressed bytes cut into `count` pieces (not at any gzip boundary), as the worker RPUSHes them. */
function cut(bytes: Buffer, count: number): Buffer[] {
  const size = Math.ceil(bytes.length / count);
  return Array.from({ length: count }, (_, i) => bytes.subarray(i * size, (i + 1) * size));
}

function sampleOutput(): string {
  const out = join(root, 'output');
  mkdirSync(join(out, 'bin'), { recursive: true });
  mkdirSync(join(out, 'share', 'empty'), { recursive: true });
  writeFileSync(join(out, 'stamp'), 'built at 10:07\n');
  writeFileSync(join(out, 'bin', 'tool'), '#!/bin/sh\necho hi\n');
  chmodSync(join(out, 'bin', 'tool'), 0o755);
  symlinkSync('../stamp', join(out, 'bin', 'link'));
  // incompressible, so that the NAR needs many chunks
  const noise = Buffer.alloc(300 * 1024);
  for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761) >>> 24;
  writeFileSync(join(out, 'share', 'blob'), noise);
  return out;
}

describe('downloadCheckNar', () => {
  const redis = privateRedisForSuite('nar-download');
  const output = sampleOutput();
  const nar = dumpOf(output);

  it('restores the output from its chunks outside the store, returns its NAR size and deletes the key', async () => {
    const key = redisKeys.checkNar('check-1', '0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d');
    const chunks = cut(gzipSync(nar), 11);
    await redis().rpush(key, ...chunks);
    const into = join(root, 'restored', 'deeper', 'out');
    const bytes = await downloadCheckNar({ redis: redis(), key, chunks: chunks.length, into, logger });
    assert.equal(bytes, nar.length);
    assert.deepEqual(dumpOf(into), nar, 'the restored tree dumps to the same NAR');
    assert.equal(readFileSync(join(into, 'stamp'), 'utf8'), 'built at 10:07\n');
    assert.equal(readlinkSync(join(into, 'bin', 'link')), '../stamp');
    assert.notEqual(statSync(join(into, 'bin', 'tool')).mode & 0o111, 0);
    assert.equal(await redis().exists(key), 0);
  });

  it('restores a single-file output', async () => {
    const file = join(root, 'single.txt');
    writeFileSync(file, 'just one file\n');
    const key = redisKeys.checkNar('check-2', '1c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d');
    await redis().rpush(key, gzipSync(dumpOf(file)));
    const into = join(root, 'single-restored');
    await downloadCheckNar({ redis: redis(), key, chunks: 1, into, logger });
    assert.equal(readFileSync(into, 'utf8'), 'just one file\n');
  });

  it("says the worker's copy expired when the key is missing", async () => {
    const key = redisKeys.checkNar('check-3', '2c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d');
    const into = join(root, 'never');
    await assert.rejects(downloadCheckNar({ redis: redis(), key, chunks: 3, into, logger }), (error: NixfarmError) => {
      assert.equal(error.code, 'check-nar-unavailable');
      assert.match(error.message, new RegExp(`^${key}: the worker's copy expired from Redis \\(kept 1 h\\)`));
      return true;
    });
    assert.equal(existsSync(into), false);
  });

  it('refuses a list with fewer chunks than announced, and keeps it', async () => {
    const key = redisKeys.checkNar('check-4', '3c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d');
    const chunks = cut(gzipSync(nar), 5);
    await redis().rpush(key, ...chunks.slice(0, 4));
    await assert.rejects(downloadCheckNar({ redis: redis(), key, chunks: 5, into: join(root, 'short'), logger }), (error: NixfarmError) => {
      assert.equal(error.code, 'check-nar-unavailable');
      assert.match(error.message, /has 4 chunks in Redis, its report announced 5/);
      return true;
    });
    assert.equal(await redis().llen(key), 4);
  });

  it("reports a copy that is not gzip, and one that is not a NAR with Nix's message, leaving nothing behind", async () => {
    const notGzip = redisKeys.checkNar('check-5', '4c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d');
    await redis().rpush(notGzip, Buffer.from('plain bytes'));
    const into = join(root, 'bad');
    await assert.rejects(downloadCheckNar({ redis: redis(), key: notGzip, chunks: 1, into, logger }), (error: NixfarmError) => {
      assert.equal(error.code, 'check-nar-unavailable');
      assert.match(error.message, /is not a whole gzip-compressed NAR \(incorrect header check\)/);
      return true;
    });
    assert.equal(existsSync(into), false);

    const notNar = redisKeys.checkNar('check-6', '5c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d');
    await redis().rpush(notNar, gzipSync(Buffer.from('this is no NAR at all, just some text that is long enough')));
    await assert.rejects(downloadCheckNar({ redis: redis(), key: notNar, chunks: 1, into, logger }), (error: NixfarmError) => {
      assert.equal(error.code, 'nix-command-failed');
      assert.match(error.message, /nix-store --restore .*bad failed with exit code 1/);
      assert.match(error.message, /error: .*(archive|input)/i);
      return true;
    });
    assert.equal(existsSync(into), false);
    assert.equal(await redis().llen(notNar), 1, 'a failed restore keeps the key (it expires by itself)');
  });

  it('refuses to restore into a path that exists', async () => {
    const key = redisKeys.checkNar('check-7', '6c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d');
    await redis().rpush(key, gzipSync(nar));
    await assert.rejects(downloadCheckNar({ redis: redis(), key, chunks: 1, into: output, logger }), /output exists already/);
    assert.equal(await redis().llen(key), 1);
  });
});
