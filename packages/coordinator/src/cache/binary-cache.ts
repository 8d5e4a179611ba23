import type { Readable } from 'node:stream';
import type { Redis } from 'ioredis';
import { STORE_DIR, isStorePath, redisKeys, type Logger } from '@nixfarm/shared';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import { renderNarinfo } from './narinfo.js';
import { compressedNar } from './nar-stream.js';

export interface BinaryCacheOptions {
  redis: Redis;
  nix: Pick<CoordinatorNix, 'signedPathInfos' | 'dumpPath'>;
  logger: Logger;
  metrics?: Pick<FarmMetrics, 'narinfoServed' | 'narBytesSent'>;
}

/** Nix's cache priority: below cache.nixos.org's 40, so a laptop asks the farm first for what the farm built. */
const PRIORITY = 30;

/**
 * The read side of the binary cache: what nix-serve and harmonia serve, but
 * only for outputs the farm built and signed. The coordinator's store also
 * holds evaluation inputs (sources, .drv files, whatever an operator put
 * there), which a read token handed to laptops should not expose, and which
 * carry no farm signature a laptop would accept anyway. So a hash part is
 * looked up in the signer's record (one Redis read: an unknown hash is a
 * quick 404), then its path info is read from the store (a path since
 * collected is a 404 too).
 */
export class BinaryCache {
  private readonly logger: Logger;

  constructor(private readonly options: BinaryCacheOptions) {
    this.logger = options.logger.child({ component: 'binary-cache' });
  }

  cacheInfo(): string {
    return `StoreDir: ${STORE_DIR}\nWantMassQuery: 1\nPriority: ${PRIORITY}\n`;
  }

  /** The store path the farm signed with this hash part, or undefined. */
  private async signedPath(hash: string): Promise<string | undefined> {
    const path = await this.options.redis.hget(redisKeys.signedPaths, hash);
    // The record is the coordinator's own, but every path still passes the grammar before it reaches Nix.
    return path !== null && isStorePath(path) ? path : undefined;
  }

  /** The narinfo of a signed, valid output, or undefined (a 404). */
  async narinfo(hash: string): Promise<string | undefined> {
    const path = await this.signedPath(hash);
    const info = path === undefined ? undefined : (await this.options.nix.signedPathInfos([path])).get(path);
    const narHash = info?.narHash;
    this.options.metrics?.narinfoServed(narHash !== undefined);
    return info === undefined || narHash === undefined ? undefined : renderNarinfo({ ...info, narHash });
  }

  /** The compressed NAR of a signed, valid output, or undefined (a 404). */
  async nar(hash: string): Promise<Readable | undefined> {
    const path = await this.signedPath(hash);
    if (path === undefined || !(await this.options.nix.signedPathInfos([path])).has(path)) return undefined;
    return compressedNar(this.options.nix, path, this.logger, (bytes) => this.options.metrics?.narBytesSent(bytes));
  }
}
