import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { Redis } from 'ioredis';
import { nixBase32 } from '@nixfarm/shared';
import type { WorkerNix } from './worker-nix.js';

/** The NAR of a rebuilt output, as a check reads it. */
export interface NarDigest {
  /** as Nix prints it: `sha256:<52 base-32 digits>` */
  narHash: string;
  /** the NAR's size, uncompressed */
  bytes: number;
  /** the SHA-256 itself, to compare with a hash in either of Nix's forms */
  sha256: Buffer;
}

/** How long a differing output's NAR waits in Redis for the coordinator (contract: redisKeys.checkNar). */
const CHECK_NAR_TTL_SECONDS = 3600;
/** compressed bytes per list entry */
const CHUNK_BYTES = 1024 * 1024;

/** Hashes the NAR of `path` (any path `nix-store --dump` reads, a `.check` tree too) as it streams, never holding it. */
export async function digestNar(nix: WorkerNix, path: string): Promise<NarDigest> {
  return nix.dump(path, async (nar) => {
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of nar as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    const sha256 = hash.digest();
    return { narHash: `sha256:${nixBase32(sha256)}`, bytes, sha256 };
  });
}

/** Whether a NAR hash as the coordinator wrote it (`sha256:` with base-32 or hex digits) names this SHA-256. */
export function sameNarHash(expected: string, sha256: Buffer): boolean {
  return expected === `sha256:${nixBase32(sha256)}` || expected === `sha256:${sha256.toString('hex')}`;
}

/**
 * Sends the NAR of `path`, gzip-compressed, into the Redis LIST `key` in
 * chunks of about 1 MiB (replacing whatever the list held), then lets it
 * expire after an hour. Returns the list's length and the NAR's size.
 */
export async function sendNar(nix: WorkerNix, redis: Redis, key: string, path: string): Promise<{ chunks: number; bytes: number }> {
  await redis.del(key);
  let chunks = 0;
  let bytes = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  await nix.dump(path, async (nar: Readable) => {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const push = async (): Promise<void> => {
      if (pendingBytes === 0) return;
      const chunk = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      await redis.rpush(key, chunk);
      chunks++;
    };
    await pipeline(nar, counted, createGzip(), async (gzipped: AsyncIterable<Buffer>) => {
      for await (const piece of gzipped) {
        pending.push(piece);
        pendingBytes += piece.length;
        if (pendingBytes >= CHUNK_BYTES) await push();
      }
      await push();
    });
  });
  await redis.expire(key, CHECK_NAR_TTL_SECONDS);
  return { chunks, bytes };
}
