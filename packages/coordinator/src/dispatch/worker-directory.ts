import type { Redis } from 'ioredis';
import { readWorkerRegistry, type WorkerListing } from '@nixfarm/shared';

/** The registered workers, as they advertise themselves in Redis. */
export class WorkerDirectory {
  constructor(private readonly redis: Redis) {}

  list(): Promise<WorkerListing[]> {
    return readWorkerRegistry(this.redis);
  }
}
