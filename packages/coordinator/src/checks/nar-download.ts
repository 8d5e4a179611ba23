import { lstat, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { execa } from 'execa';
import type { Redis } from 'ioredis';
import { NixCommandError, NixfarmError, ValidationError, type Logger } from '@nixfarm/shared';

export interface DownloadCheckNarOptions {
  redis: Redis;
  /** the LIST of gzip-compressed NAR chunks (shared's redisKeys.checkNar) */
  key: string;
  /** how many chunks the worker announced in its check report */
  chunks: number;
  /** where the rebuilt output is restored, outside the store (it cannot be registered under its own path): must not exist yet */
  into: string;
  logger?: Logger;
}

/** Chunks per LRANGE: the worker writes about 1 MiB of compressed bytes each, so a few MiB in memory at a time. */
const CHUNKS_PER_READ = 4;

function unavailable(key: string, what: string, cause?: unknown): NixfarmError {
  return new NixfarmError('check-nar-unavailable', `${key}: ${what}; check the derivation again to get a new copy`, { details: { key }, cause });
}

/** The restored output must be the worker's copy alone: never restore over (or into) anything that exists. */
async function mustNotExist(into: string): Promise<void> {
  const existing = await lstat(into).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (existing !== undefined) throw new ValidationError(`${into} exists already: a rebuilt output is restored into a path that does not exist yet`);
}

/**
 * Brings a rebuilt output that differs from the coordinator's copy back from
 * Redis, outside the store: the chunks are read a few at a time (never the
 * whole NAR in memory), gunzipped as a stream into `nix-store --restore`.
 * The key is deleted once the output is restored; on failure it stays (it
 * expires by itself) and nothing is left at `into`. Returns the NAR's size
 * (uncompressed bytes).
 */
export async function downloadCheckNar(options: DownloadCheckNarOptions): Promise<number> {
  const { redis, key, chunks, into, logger } = options;
  const started = Date.now();
  await mustNotExist(into);
  const length = await redis.llen(key);
  if (length === 0) throw unavailable(key, "the worker's copy expired from Redis (kept 1 h) or was taken already");
  if (length !== chunks) throw unavailable(key, `the worker's copy has ${length} chunks in Redis, its report announced ${chunks}`);
  await mkdir(dirname(into), { recursive: true });

  const restore = execa('nix-store', ['--restore', into], { stdin: 'pipe', stdout: 'ignore', stderr: 'pipe', reject: false, encoding: 'utf8' });
  let bytes = 0;
  let ownError: NixfarmError | undefined;
  const compressed = async function* (): AsyncGenerator<Buffer> {
    for (let start = 0; start < chunks; start += CHUNKS_PER_READ) {
      const stop = Math.min(start + CHUNKS_PER_READ, chunks) - 1;
      const batch = await redis.lrangeBuffer(key, start, stop).catch((error: unknown) => {
        throw (ownError = new NixfarmError('redis-failed', `${key}: reading the worker's copy from Redis failed: ${String(error)}`, {
          retryable: true,
          cause: error,
        }));
      });
      if (batch.length !== stop - start + 1) {
        throw (ownError = unavailable(key, `the worker's copy disappeared from Redis while it was read (chunk ${start + batch.length + 1} of ${chunks})`));
      }
      yield* batch;
    }
  };
  const counted = async function* (source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      bytes += chunk.length;
      yield chunk;
    }
  };
  const gunzip = createGunzip();
  gunzip.once('error', (error) => {
    ownError ??= unavailable(key, `the worker's copy is not a whole gzip-compressed NAR (${error.message})`, error);
  });
  let streamError: unknown;
  try {
    await pipeline(compressed, gunzip, counted, restore.stdin!);
  } catch (error) {
    streamError = error;
    restore.kill();
  }
  const result = await restore;
  // Our own finding first (Nix then only saw its input end early), then Nix's message (the pipeline then only saw a broken pipe)
  const nixFailure = () =>
    new NixCommandError(['nix-store', '--restore', into], result.exitCode, `${result.stderr || result.shortMessage}\n(restoring ${key})`);
  // Our own finding first (Nix then only saw its input end early), then Nix's own failure (the pipeline then only saw a broken pipe)
  const failure =
    ownError ??
    (result.exitCode !== 0 && !result.isTerminated ? nixFailure() : undefined) ??
    (streamError === undefined ? undefined : unavailable(key, `reading it failed: ${String(streamError)}`, streamError)) ??
    (result.exitCode !== 0 ? nixFailure() : undefined);
  if (failure !== undefined) {
    await rm(into, { recursive: true, force: true });
    logger?.warn({ key, into, err: failure }, 'bringing back a rebuilt output failed');
    throw failure;
  }
  await redis.del(key);
  logger?.debug({ key, into, chunks, bytes, ms: Date.now() - started }, 'rebuilt output restored');
  return bytes;
}
