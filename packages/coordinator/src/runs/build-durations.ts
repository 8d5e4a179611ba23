import type { Redis } from 'ioredis';
import { redisKeys } from '@nixfarm/shared';

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

  /** name -> last known ms, for the names that have one */
  async lookup(names: readonly string[]): Promise<Map<string, number>> {
    const known = names.length === 0 ? [] : await this.redis.hmget(redisKeys.durations, ...names);
    const out = new Map<string, number>();
    names.forEach((name, i) => {
      const value = known[i];
      if (value !== null && value !== undefined) out.set(name, Number(value));
    });
    return out;
  }
}
