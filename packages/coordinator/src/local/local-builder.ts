import type { Redis } from 'ioredis';
import { BuildExecutor, SAME_STORE, ServeBuilder, WorkerEventPublisher } from '@nixfarm/worker';
import { BUILTIN_SYSTEM, localStorePool, type Derivation, type Logger, type ServePool } from '@nixfarm/shared';
import type { ReadyDerivation } from '../graph/derivation-graph.js';

export interface LocalBuilderOptions {
  redis: Redis;
  logger: Logger;
  nixOptions: ReadonlyArray<readonly [string, string]>;
  nixEnv?: Record<string, string>;
  /** the coordinator's own system */
  system: string;
  maxJobs: number;
  /** the parsed .drv from the coordinator's store (CoordinatorNix.readDerivation) */
  readDerivation: (drvPath: string) => Promise<Derivation>;
}

/** The name local builds are reported under. */
export const LOCAL_BUILDER_NAME = 'coordinator';

/**
 * Builds `preferLocalBuild` derivations on the coordinator's own store, as Nix
 * does (they are cheap: writing a file, a symlink farm) so they never wait for
 * a worker or pay for two copies. Reports through the same event stream as a
 * worker, so the graph treats both alike.
 */
export class LocalBuilder {
  private readonly executor: BuildExecutor;
  private readonly store: ServePool;
  private readonly waiting: ReadyDerivation[] = [];
  private readonly inFlight = new Set<string>();
  private running = 0;

  constructor(private readonly options: LocalBuilderOptions) {
    this.store = localStorePool({ nixOptions: options.nixOptions, env: options.nixEnv, write: true, maxIdle: options.maxJobs, peer: "the coordinator's store" });
    const builder = new ServeBuilder({
      store: this.store,
      readDerivation: options.readDerivation,
    });
    this.executor = new BuildExecutor({
      workerName: LOCAL_BUILDER_NAME,
      builder,
      mover: SAME_STORE,
      publisher: new WorkerEventPublisher(options.redis),
      logger: options.logger.child({ component: 'local-builder' }),
      logStream: { redis: options.redis },
    });
  }

  /** Whether this ready derivation is one the coordinator builds itself. */
  takes(ready: ReadyDerivation): boolean {
    return ready.preferLocalBuild === true && (ready.job.system === this.options.system || ready.job.system === BUILTIN_SYSTEM);
  }

  submit(ready: ReadyDerivation): void {
    if (this.inFlight.has(ready.hash)) return;
    this.inFlight.add(ready.hash);
    this.waiting.push(ready);
    this.pump();
  }

  private pump(): void {
    while (this.running < this.options.maxJobs && this.waiting.length > 0) {
      const next = this.waiting.shift()!;
      this.running++;
      void this.executor
        .execute(next.job, { jobId: `local-${next.hash}`, attempt: next.attempt })
        .catch((error: unknown) => this.options.logger.error({ err: error, drvPath: next.job.drvPath }, 'local build failed to report'))
        .finally(() => {
          this.running--;
          this.inFlight.delete(next.hash);
          this.pump();
        });
    }
  }

  /** Ends the build sessions (running local builds are interrupted and retried by whoever resumes the run). */
  close(): Promise<void> {
    return this.store.close();
  }
}
