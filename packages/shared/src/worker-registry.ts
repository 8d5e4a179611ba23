import type { Redis } from 'ioredis';
import { redisKeys } from './redis-keys.js';
import { workerInfoSchema, type WorkerInfo } from './schemas/worker-info.js';

/** A worker whose heartbeat is older than this is gone: shown so, not counted as capable, not yielded to. */
export const WORKER_STALE_MS = 15_000;

export interface WorkerListing extends WorkerInfo {
  alive: boolean;
}

/** The workers registered in Redis, as they advertise themselves; one place decides who is alive. */
export async function readWorkerRegistry(redis: Redis, now = Date.now()): Promise<WorkerListing[]> {
  const names = (await redis.smembers(redisKeys.workers)).sort();
  const values = names.length === 0 ? [] : await redis.mget(names.map((n) => redisKeys.worker(n)));
  const out: WorkerListing[] = [];
  for (const value of values) {
    if (value === null) continue;
    const parsed = workerInfoSchema.safeParse(JSON.parse(value));
    if (parsed.success) out.push({ ...parsed.data, alive: now - parsed.data.heartbeatAt < WORKER_STALE_MS });
  }
  return out;
}

/** Whether a name is in the registry at all, listed or not (an entry whose JSON no longer parses is not listed). */
export async function isRegisteredWorker(redis: Redis, name: string): Promise<boolean> {
  return (await redis.sismember(redisKeys.workers, name)) === 1;
}

/**
 * Takes a worker out of the registry: a worker leaving on purpose, or an
 * operator forgetting one that is gone for good. A worker still beating
 * registers itself again at its next heartbeat.
 */
export async function removeWorker(redis: Redis, name: string): Promise<void> {
  await redis.multi().srem(redisKeys.workers, name).del(redisKeys.worker(name)).exec();
}
