import { redisKeys, workerEventSchema, type WorkerEvent } from '@nixfarm/shared';
import type { TestFarm } from '../harness/test-farm.js';
import { redisClient } from '../harness/redis-client.js';

/**
 * Every report workers sent, in stream order, read from outside the
 * coordinator (the stream keeps up to a million): who started, finished or
 * handed back what, and when by the worker's clock (all workers of a test
 * farm share the host's clock).
 */
export async function workerEventLog(farm: TestFarm): Promise<WorkerEvent[]> {
  const redis = redisClient(farm.redis.url, { maxRetriesPerRequest: 3 });
  try {
    const entries = (await redis.xrange(redisKeys.workerEvents, '-', '+')) as Array<[string, string[]]>;
    return entries.map(([id, fields]) => {
      const parsed = workerEventSchema.safeParse(JSON.parse(fields[1] ?? 'null'));
      if (!parsed.success) throw new Error(`worker event ${id} does not parse: ${parsed.error.message}`);
      return parsed.data;
    });
  } finally {
    redis.disconnect();
  }
}

/** The events of one kind, typed. */
export function eventsOfType<T extends WorkerEvent['type']>(events: readonly WorkerEvent[], type: T): Array<Extract<WorkerEvent, { type: T }>> {
  return events.filter((e): e is Extract<WorkerEvent, { type: T }> => e.type === type);
}
