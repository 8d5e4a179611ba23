import type { Redis } from 'ioredis';
import { redisKeys, runEventSchema, type RunEvent } from '@nixfarm/shared';

/** Per-run event streams in Redis: durable, so a client that reconnects (or `nixfarm wait`) misses nothing. */
const MAX_EVENTS_PER_RUN = 200_000;

export interface StoredRunEvent {
  id: string;
  event: RunEvent;
}

export interface RunEventDelivery {
  runIds: Iterable<string>;
  event: RunEvent;
}

export class RunEvents {
  constructor(private readonly redis: Redis) {}

  async emit(runIds: Iterable<string>, event: RunEvent): Promise<void> {
    await this.emitAll([{ runIds, event }]);
  }

  /** Many events in one round trip, appended in the order given. */
  async emitAll(deliveries: Iterable<RunEventDelivery>): Promise<void> {
    const pipeline = this.redis.pipeline();
    for (const { runIds, event } of deliveries) {
      const data = JSON.stringify(event);
      for (const id of runIds) pipeline.xadd(redisKeys.runEvents(id), 'MAXLEN', '~', String(MAX_EVENTS_PER_RUN), '*', 'e', data);
    }
    if (pipeline.length === 0) return;
    for (const [error] of (await pipeline.exec()) ?? []) if (error) throw error;
  }

  /** Reads events after `afterId` ('0' for all), blocking up to blockMs when there are none. Needs a connection of its own when blocking. */
  async read(connection: Redis, runId: string, afterId: string, blockMs: number): Promise<StoredRunEvent[]> {
    const reply = (await connection.xread('COUNT', 1000, 'BLOCK', blockMs, 'STREAMS', redisKeys.runEvents(runId), afterId)) as Array<
      [string, Array<[string, string[]]>]
    > | null;
    if (reply === null) return [];
    const out: StoredRunEvent[] = [];
    for (const [, entries] of reply) {
      for (const [id, fields] of entries) {
        const parsed = runEventSchema.safeParse(JSON.parse(fields[1] ?? 'null'));
        if (parsed.success) out.push({ id, event: parsed.data });
      }
    }
    return out;
  }
}
