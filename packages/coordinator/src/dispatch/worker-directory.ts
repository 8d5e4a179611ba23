import type { Redis } from 'ioredis';
import { redisKeys, workerInfoSchema, type WorkerInfo } from '@nixfarm/shared';

/** A worker whose heartbeat is older than this is shown as gone and not counted as capable. */
export const WORKER_STALE_MS = 15_000;

export interface WorkerListing extends WorkerInfo {
  alive: boolean;
}

/** The registered workers, as they advertise themselves in Redis. */
export class WorkerDirectory {
  constructor(private readonly redis: Redis) {}

  async list(): Promise<WorkerListing[]> {
    const names = (await this.redis.smembers(redisKeys.workers)).sort();
    const pipeline = this.redis.pipeline();
    for (const name of names) pipeline.get(redisKeys.worker(name));
    const replies = (await pipeline.exec()) ?? [];
    const now = Date.now();
    const out: WorkerListing[] = [];
    for (const [, value] of replies) {
      if (typeof value !== 'string') continue;
      const parsed = workerInfoSchema.safeParse(JSON.parse(value));
      if (parsed.success) out.push({ ...parsed.data, alive: now - parsed.data.heartbeatAt < WORKER_STALE_MS });
    }
    return out;
  }
}
