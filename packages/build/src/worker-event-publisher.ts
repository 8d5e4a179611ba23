import type { Redis } from 'ioredis';
import { redisKeys, type WorkerEvent } from '@nixfarm/shared';

/** Worker events go into one Redis stream that the coordinator reads through a consumer group. */
const MAX_STREAM_LENGTH = 1_000_000;

export class WorkerEventPublisher {
  constructor(private readonly redis: Redis) {}

  async publish(event: WorkerEvent): Promise<void> {
    await this.redis.xadd(redisKeys.workerEvents, 'MAXLEN', '~', String(MAX_STREAM_LENGTH), '*', 'e', JSON.stringify(event));
  }
}
