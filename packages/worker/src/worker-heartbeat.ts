import type { Redis } from 'ioredis';
import { redisKeys, removeWorker, type WorkerInfo } from '@nixfarm/shared';

/** How often a worker re-advertises itself; the coordinator calls it gone after a few missed beats. */
const HEARTBEAT_INTERVAL_MS = 2000;

export interface WorkerHeartbeatOptions {
  /** measured before each periodic beat (free disk space); beats on a change of load do not wait for it */
  refresh?: () => Promise<unknown>;
}

/** Advertises this worker in Redis: capabilities, load and liveness, for placement and the ops view. */
export class WorkerHeartbeat {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly redis: Redis,
    private readonly info: () => WorkerInfo,
    private readonly options: WorkerHeartbeatOptions = {},
  ) {}

  async start(): Promise<void> {
    await this.options.refresh?.();
    await this.beat();
    this.timer = setInterval(() => void this.periodic().catch(() => undefined), HEARTBEAT_INTERVAL_MS);
  }

  /** Written at once (other workers' placement reads the load): the info is taken synchronously. */
  async beat(): Promise<void> {
    if (this.stopped) return;
    const info = { ...this.info(), heartbeatAt: Date.now() };
    await this.redis.multi().sadd(redisKeys.workers, info.name).set(redisKeys.worker(info.name), JSON.stringify(info)).exec();
  }

  private async periodic(): Promise<void> {
    await this.options.refresh?.();
    await this.beat();
  }

  async stop(): Promise<void> {
    // A periodic beat still measuring must not advertise a worker that has left.
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    // Leaving on purpose: say so at once instead of waiting for the heartbeat to go stale.
    await removeWorker(this.redis, this.info().name);
  }
}
