import type { Redis } from 'ioredis';
import { isRegisteredWorker, NixfarmError, readWorkerRegistry, removeWorker, WORKER_STALE_MS, type WorkerListing } from '@nixfarm/shared';

class WorkerNotFoundError extends NixfarmError {
  constructor(name: string, known: readonly string[]) {
    super(
      'worker-not-found',
      `no worker named ${JSON.stringify(name)} is registered; registered: ${known.length === 0 ? 'none' : known.join(', ')} (\`nixfarm workers\` lists them)`,
    );
  }
}

class WorkerAliveError extends NixfarmError {
  constructor(worker: WorkerListing, now: number) {
    super(
      'worker-alive',
      `worker ${JSON.stringify(worker.name)} is alive (last heartbeat ${((now - worker.heartbeatAt) / 1000).toFixed(1)} s ago, under the ${WORKER_STALE_MS / 1000} s limit): ` +
        'a live worker would register again at its next heartbeat; stop it instead (Ctrl-C or SIGTERM drains it and it leaves the registry itself), ' +
        'or forget it once its heartbeat is older than the limit',
    );
  }
}

/** The registered workers, as they advertise themselves in Redis. */
export class WorkerDirectory {
  constructor(private readonly redis: Redis) {}

  list(): Promise<WorkerListing[]> {
    return readWorkerRegistry(this.redis);
  }

  /**
   * Takes a gone worker (its heartbeat stale: killed, its machine lost) out of
   * the registry; its name stays bound to its key. Its builds are requeued by
   * their lapsing locks whether or not it is forgotten. The worker as last
   * listed, or undefined for an entry that could not be read.
   */
  async forget(name: string, now = Date.now()): Promise<WorkerListing | undefined> {
    const listed = await readWorkerRegistry(this.redis, now);
    const worker = listed.find((w) => w.name === name);
    if (worker === undefined && !(await isRegisteredWorker(this.redis, name)))
      throw new WorkerNotFoundError(
        name,
        listed.map((w) => w.name),
      );
    if (worker?.alive === true) throw new WorkerAliveError(worker, now);
    // A heartbeat landing between the read and the removal is removed too, and written again by the next one (every 2 s).
    await removeWorker(this.redis, name);
    return worker;
  }
}
