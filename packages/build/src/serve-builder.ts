import {
  DEFAULT_MAX_LOG_SIZE,
  InfrastructureError,
  NixSetupError,
  buildSucceeded,
  classifyNixBuildFailure,
  stripTerminalCodes,
  type BasicDerivation,
  type BuildJob,
  type Derivation,
  type ServeBuildResult,
  type ServePool,
} from '@nixfarm/shared';
import type { BuildAttempt, BuildOptions, DerivationBuilder } from './derivation-builder.js';

export interface ServeBuilderOptions {
  /** sessions with the store that builds */
  store: ServePool;
  /** the parsed .drv (from wherever it lives: the coordinator's store, or this one) */
  readDerivation: (drvPath: string) => Promise<Derivation>;
  /** a build whose log grows past this ends as log-limit-exceeded (bytes) */
  maxLogBytes?: number;
  /** which Nix builds, in messages about its setup ("worker w1's Nix"); default "the building Nix" */
  nix?: string;
  /** another way out, added to the fix when that Nix cannot build (the coordinator: --no-local-builds) */
  alternative?: string;
}

/** the worker config's default (its --max-log-size), so a builder made without one agrees with the worker's */
const DEFAULT_MAX_LOG_BYTES = DEFAULT_MAX_LOG_SIZE;

/**
 * Builds through a long-lived `nix-store --serve --write` session, as Hydra's
 * queue runner does: the derivation travels in the request, so the building
 * store needs only its inputs (not the .drv closure), and no Nix process
 * starts per build. Cancelling closes the session; Nix sees the hang-up and
 * kills the builder.
 */
export class ServeBuilder implements DerivationBuilder {
  constructor(private readonly options: ServeBuilderOptions) {}

  async build(job: BuildJob, { onLogLine, signal }: BuildOptions): Promise<BuildAttempt> {
    const drv = await this.options.readDerivation(job.drvPath);
    const basic = basicDerivation(drv, job.inputPaths);
    if (signal?.aborted) return { status: 'cancelled', error: `build of ${job.drvPath} cancelled` };
    return this.options.store.use(async (session) => {
      session.onStderrLine = onLogLine;
      const cancel = (): void => void session.close();
      signal?.addEventListener('abort', cancel, { once: true });
      try {
        const result = await session.connection.buildDerivation(job.drvPath, basic, {
          maxSilentSeconds: job.maxSilentSeconds ?? 0,
          timeoutSeconds: job.timeoutSeconds ?? 0,
          maxLogSize: this.options.maxLogBytes ?? DEFAULT_MAX_LOG_BYTES,
        });
        return this.attempt(job, result);
      } catch (error) {
        if (signal?.aborted) return { status: 'cancelled', error: `build of ${job.drvPath} cancelled` };
        throw error;
      } finally {
        signal?.removeEventListener('abort', cancel);
      }
    });
  }

  /**
   * Nix's verdict as nixfarm's. A failure is the derivation's own (failed,
   * never retried), the building machine's Nix setup (NixSetupError: not
   * this derivation's fault, no use trying on this machine), or passing
   * (InfrastructureError: retried elsewhere or later).
   */
  private attempt(job: BuildJob, result: ServeBuildResult): BuildAttempt {
    if (buildSucceeded(result.status)) return { status: 'succeeded' };
    const said = stripTerminalCodes(result.errorMessage).trim() || `build of ${job.drvPath} ended with ${result.status}`;
    if (result.status === 'TimedOut') return { status: 'timed-out', error: said };
    if (result.status === 'LogLimitExceeded') return { status: 'log-limit-exceeded', error: said };
    const failure = classifyNixBuildFailure(result.status, result.errorMessage);
    switch (failure.kind) {
      case 'derivation':
        return { status: 'failed', error: failure.message, errorCode: failure.code };
      case 'machine': {
        const fix = failure.fix ?? 'fix what Nix says';
        throw new NixSetupError({
          nix: this.options.nix ?? 'the building Nix',
          code: failure.code,
          nixMessage: failure.message,
          fix: this.options.alternative === undefined ? fix : `${fix}\n${this.options.alternative}`,
        });
      }
      case 'transient':
        // a fixed-output fetch that failed, a full disk, an input that vanished: Hydra retries these too
        throw new InfrastructureError('build-not-done', `Nix could not build ${job.drvPath} (${result.status}): ${failure.message}`);
    }
  }
}

/** The build request: the .drv with its input sources widened to every input path, as Nix's build-remote sends it. */
function basicDerivation(drv: Derivation, inputPaths: readonly string[]): BasicDerivation {
  const outputs: BasicDerivation['outputs'] = {};
  for (const [name, path] of Object.entries(drv.outputs)) {
    const hash = drv.outputHashes[name] ?? { hashAlgo: '', hash: '' };
    outputs[name] = { path, hashAlgo: hash.hashAlgo, hash: hash.hash };
  }
  return { outputs, inputSrcs: [...inputPaths], platform: drv.system, builder: drv.builder, args: drv.args, env: drv.env };
}
