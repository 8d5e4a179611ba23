import type { Redis } from 'ioredis';
import { BuildExecutor, SAME_STORE, ServeBuilder, WorkerEventPublisher } from '@nixfarm/build';
import { BUILTIN_SYSTEM, localJobId, type Derivation, type Logger, type NixSetupError, type ReportSigner, type ServePool } from '@nixfarm/shared';
import type { ReadyDerivation } from '../graph/derivation-graph.js';

export interface LocalBuilderOptions {
  redis: Redis;
  /** signs the local builds' reports (the coordinator's host key): they travel through the same stream as a worker's */
  signer: ReportSigner;
  logger: Logger;
  /** build sessions with the coordinator's own store (localStorePool with --write): the pool its start-up probe built with */
  store: ServePool;
  /** the coordinator's own system */
  system: string;
  maxJobs: number;
  /** the parsed .drv from the coordinator's store (CoordinatorNix.readDerivation) */
  readDerivation: (drvPath: string) => Promise<Derivation>;
}

/** The name local builds are reported under. */
export const LOCAL_BUILDER_NAME = 'coordinator';

/** Which Nix builds here, in messages. */
export const COORDINATOR_NIX = "the coordinator's Nix";

/** The way out a coordinator always has when its Nix cannot build, added to every fix. */
export const NO_LOCAL_BUILDS_FIX = 'or start the coordinator with --no-local-builds (workers then build preferLocalBuild derivations too)';

/**
 * Builds `preferLocalBuild` derivations on the coordinator's own store, as Nix
 * does (they are cheap: writing a file, a symlink farm) so they never wait for
 * a worker or pay for two copies. Reports through the same event stream as a
 * worker, so the graph treats both alike.
 */
export class LocalBuilder {
  private readonly executor: BuildExecutor;
  private readonly logger: Logger;
  /** fault codes whose fix was logged: said once, however many derivations hit the same wall */
  private readonly explained = new Set<string>();
  private readonly waiting: ReadyDerivation[] = [];
  private readonly inFlight = new Set<string>();
  private running = 0;

  constructor(private readonly options: LocalBuilderOptions) {
    this.logger = options.logger.child({ component: 'local-builder' });
    const builder = new ServeBuilder({
      store: options.store,
      nix: COORDINATOR_NIX,
      alternative: NO_LOCAL_BUILDS_FIX,
      readDerivation: options.readDerivation,
    });
    this.executor = new BuildExecutor({
      workerName: LOCAL_BUILDER_NAME,
      builder,
      mover: SAME_STORE,
      publisher: new WorkerEventPublisher(options.redis, options.signer),
      logger: this.logger,
      logStream: { redis: options.redis, signer: options.signer },
      // The report says aborted, not retryable, with the fix: the derivation ends at once (not five tries); the log says it once.
      onNixSetupError: (error) => this.nixSetupFailed(error),
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
        .execute(next.job, { jobId: localJobId(next.hash), attempt: next.attempt })
        .catch((error: unknown) => this.options.logger.error({ err: error, drvPath: next.job.drvPath }, 'local build failed to report'))
        .finally(() => {
          this.running--;
          this.inFlight.delete(next.hash);
          this.pump();
        });
    }
  }

  private nixSetupFailed(error: NixSetupError): void {
    if (this.explained.has(error.code)) return;
    this.explained.add(error.code);
    this.logger.error(
      { code: error.code, nixMessage: error.nixMessage, fix: error.fix },
      `the coordinator's Nix cannot build: its local builds end aborted at once; fix: ${error.fix}`,
    );
  }
}
