import type { Redis } from 'ioredis';
import { redisKeys } from '@nixfarm/shared';

/** Names per HMGET: each command stays short, so Redis answers others between them. */
const LOOKUP_CHUNK = 5000;

export interface BuildDuration {
  /** derivation name (the store path's name part, without .drv) */
  name: string;
  ms: number;
}

/**
 * The last build time of each derivation name: the weights of the next run's
 * critical paths. Kept by name, so a rebuild with new inputs (a new hash)
 * still counts what its predecessor took.
 */
export class BuildDurations {
  constructor(private readonly redis: Redis) {}

  /** Records many at once (one command); the last of a name wins. */
  async record(durations: readonly BuildDuration[]): Promise<void> {
    if (durations.length === 0) return;
    const fields: Record<string, string> = {};
    for (const d of durations) fields[d.name] = String(Math.round(d.ms));
    await this.redis.hset(redisKeys.durations, fields);
  }

  /** name -> last known ms, for the names that have one; many names are asked in chunks, in one round trip */
  async lookup(names: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (names.length === 0) return out;
    const pipeline = this.redis.pipeline();
    for (let i = 0; i < names.length; i += LOOKUP_CHUNK) pipeline.hmget(redisKeys.durations, ...names.slice(i, i + LOOKUP_CHUNK));
    const replies = (await pipeline.exec()) ?? [];
    replies.forEach(([error, values], chunk) => {
      if (error) throw error;
      (values as Array<string | null>).forEach((value, i) => {
        if (value !== null) out.set(names[chunk * LOOKUP_CHUNK + i]!, Number(value));
      });
    });
    return out;
  }
}
