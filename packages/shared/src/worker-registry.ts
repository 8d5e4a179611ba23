import type { Redis } from 'ioredis';
import { redisKeys } from './redis-keys.js';
import { workerInfoSchema, type WorkerInfo } from './schemas/worker-info.js';

/** A worker whose heartbeat is older than this is gone: shown so, not counted as capable, not yielded to. */
const WORKER_STALE_MS = 15_000;

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
