import type { Redis } from 'ioredis';
import { hashPart, redisKeys, type Logger } from '@nixfarm/shared';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import type { SigningKey } from './signing-key.js';

export interface OutputSignerOptions {
  nix: Pick<CoordinatorNix, 'signPaths'>;
  key: SigningKey;
  redis: Redis;
  logger: Logger;
  metrics?: Pick<FarmMetrics, 'outputsSigned'>;
}

/**
 * Signs outputs as they become valid in the coordinator's store, remote and
 * local builds alike (both are accepted by the report handler), with the key
 * only the coordinator holds, and records them as what the binary cache
 * serves. Signing happens after the store holds the path, so a signature
 * never vouches for a path the coordinator has not checked.
 *
 * A `nix store sign` process costs about 0.1 s whatever the batch size, so
 * signing runs beside the handling of reports, one process at a time: paths
 * handed in while one signs wait and go together in the next. Only the end
 * of a run waits for it (settled()), so reports are applied and dependents
 * released at the pace they were before.
 */
export class OutputSigner {
  private waiting: string[] = [];
  private running: Promise<void> | undefined;

  constructor(private readonly options: OutputSignerOptions) {}

  /** Queues `paths` for signing; returns at once. */
  sign(paths: readonly string[]): void {
    if (paths.length === 0) return;
    this.waiting.push(...paths);
    this.running ??= this.drain();
  }

  /** Resolves once every path handed in so far is signed (or its failure logged). */
  async settled(): Promise<void> {
    while (this.running !== undefined) await this.running;
  }

  private async drain(): Promise<void> {
    while (this.waiting.length > 0) {
      const batch = [...new Set(this.waiting)];
      this.waiting = [];
      await this.signBatch(batch);
    }
    this.running = undefined;
  }

  /**
   * Never throws: the builds stay succeeded, and a path left unsigned is
   * only missing from the cache (a laptop builds or substitutes it
   * elsewhere), which the log says with the reason.
   */
  private async signBatch(paths: readonly string[]): Promise<void> {
    const { nix, key, redis, logger } = this.options;
    const started = performance.now();
    try {
      await nix.signPaths(key.secretKeyFile, paths);
      await redis.hset(redisKeys.signedPaths, Object.fromEntries(paths.map((p) => [hashPart(p), p])));
    } catch (error) {
      logger.error(
        { err: error, paths: paths.length, keyFile: key.secretKeyFile },
        'signing outputs failed: they are built but not signed, so the binary cache does not serve them',
      );
      return;
    }
    const seconds = (performance.now() - started) / 1000;
    this.options.metrics?.outputsSigned(paths.length, seconds);
    logger.debug({ paths: paths.length, ms: Math.round(seconds * 1000) }, 'outputs signed');
  }
}
