import type { Redis } from 'ioredis';
import { redisKeys, type WorkerInfo } from '@nixfarm/shared';

/** How often a worker re-advertises itself; the coordinator calls it gone after a few missed beats. */
export const HEARTBEAT_INTERVAL_MS = 2000;

/** Advertises this worker in Redis: capabilities, load and liveness, for placement and the ops view. */
export class WorkerHeartbeat {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly info: () => WorkerInfo,
  ) {}

  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => void this.beat().catch(() => undefined), HEARTBEAT_INTERVAL_MS);
  }

  async beat(): Promise<void> {
    const info = { ...this.info(), heartbeatAt: Date.now() };
    await this.redis.multi().sadd(redisKeys.workers, info.name).set(redisKeys.worker(info.name), JSON.stringify(info)).exec();
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    const info = this.info();
    // Leaving on purpose: say so at once instead of waiting for the heartbeat to go stale.
    await this.redis.multi().srem(redisKeys.workers, info.name).del(redisKeys.worker(info.name)).exec();
  }
}
