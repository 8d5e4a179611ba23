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
 */
export class OutputSigner {
  constructor(private readonly options: OutputSignerOptions) {}

  /**
   * Signs `paths` in one batch. Never throws: the builds stay succeeded, and
   * a path left unsigned is only missing from the cache (a laptop builds or
   * substitutes it elsewhere), which the log says with the reason.
   */
  async sign(paths: readonly string[]): Promise<void> {
    if (paths.length === 0) return;
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
