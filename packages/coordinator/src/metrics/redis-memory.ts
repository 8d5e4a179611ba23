import type { Redis } from 'ioredis';

/** Redis's memory at a scrape, from INFO memory. */
export interface RedisMemory {
  usedBytes: number;
  /** `maxmemory`: 0 when Redis has no limit */
  maxBytes: number;
}

/**
 * Reads used_memory and maxmemory from INFO memory: INFO is in both roles'
 * ACL (BullMQ reads the server version with it), where CONFIG GET is not.
 * Redis near its maxmemory refuses writes (BullMQ needs `noeviction`), and
 * the farm stops taking reports, so this is worth an alert.
 */
export async function readRedisMemory(redis: Redis): Promise<RedisMemory> {
  const text = await redis.info('memory');
  const field = (name: string): number => {
    const value = new RegExp(`^${name}:(\\d+)\\r?$`, 'm').exec(text)?.[1];
    return value === undefined ? 0 : Number(value);
  };
  return { usedBytes: field('used_memory'), maxBytes: field('maxmemory') };
}
