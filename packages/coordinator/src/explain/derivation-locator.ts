import type { Redis } from 'ioredis';
import { InvalidStorePathError, NIX_BASE32_CHAR, REDIS_PREFIX, STORE_DIR, ValidationError, hashPart, isHashPrefix, redisKeys, storePathProblem } from '@nixfarm/shared';

/** What the user asked about, after validation. */
export type WhyQuery =
  | { kind: 'drv-path'; path: string; hash: string }
  | { kind: 'output-path'; path: string; hash: string }
  | { kind: 'hash-prefix'; prefix: string };

/**
 * Validates `nixfarm why`'s argument: a store path (checked with the store-path
 * grammar; a path inside a store object such as `.../bin/hello` stands for its
 * top-level object) or a prefix of a hash part in Nix's base-32 alphabet.
 * Throws ValidationError (or InvalidStorePathError) saying what is accepted.
 */
export function parseWhyQuery(raw: string): WhyQuery {
  const text = raw.trim();
  if (text.startsWith('/')) {
    const prefix = `${STORE_DIR}/`;
    const [object = '', ...inside] = text.startsWith(prefix) ? text.slice(prefix.length).split('/') : [];
    const topLevel = text.startsWith(prefix) ? prefix + object : text;
    // The whole argument is named in the message: the part that was cut off may be what looks wrong to the user.
    const problem = storePathProblem(topLevel);
    if (problem !== undefined) throw new InvalidStorePathError(text, problem);
    const path = topLevel;
    // A path inside the object stands for the object, but only a plain one: no `..`, `.`, whitespace or shell characters.
    if (inside.at(-1) === '') inside.pop();
    const bad = inside.find((part) => part === '..' || part === '.' || !/^[A-Za-z0-9+\-._?=@,:%~]+$/.test(part));
    if (bad !== undefined) throw new InvalidStorePathError(text, `a path inside a store object may not contain ${JSON.stringify(bad)}`);
    return path.endsWith('.drv') ? { kind: 'drv-path', path, hash: hashPart(path) } : { kind: 'output-path', path, hash: hashPart(path) };
  }
  if (isHashPrefix(text)) return { kind: 'hash-prefix', prefix: text };
  throw new ValidationError(
    `${JSON.stringify(raw)} is neither a store path (/nix/store/<hash>-<name>, a .drv or an output) nor a hash prefix (1-32 characters of Nix base-32: 0-9 and a-z without e o t u)`,
  );
}

export interface Candidate {
  hash: string;
  drvPath: string;
  status: string;
}

export type Resolution =
  | { kind: 'found'; hash: string; via: 'drv-path' | 'output-path' | 'hash-prefix' | 'output-hash-prefix' }
  | { kind: 'not-found' }
  | { kind: 'ambiguous'; candidates: Candidate[]; total: number };

/**
 * HASH output-hash -> drv-hash, written only by this module. Input-addressed
 * outputs never change their derivation, so an entry stays true; it is a cache
 * of what a scan of the graph found.
 */
export const OUTPUT_INDEX_KEY = `${REDIS_PREFIX}:why:output-index`;

const NODE_KEY_RE = new RegExp(`^${REDIS_PREFIX}:drv:(${NIX_BASE32_CHAR}{32})$`);
const MAX_CANDIDATES = 20;

/**
 * Finds the graph node a query means. Derivation paths and drv-hash prefixes
 * are direct key look-ups. The graph has no index from outputs to nodes, so an
 * output is looked up in OUTPUT_INDEX_KEY, and on a miss every node is scanned
 * once (SCAN, O(nodes in Redis), incremental so Redis stays responsive) and the
 * index filled for all of them: later look-ups of known outputs cost O(1), but
 * each unknown output costs a full scan. A graph-maintained index written at
 * registration would remove that cost.
 */
export class DerivationLocator {
  constructor(private readonly redis: Redis) {}

  async resolve(query: WhyQuery): Promise<Resolution> {
    switch (query.kind) {
      case 'drv-path':
        return (await this.nodeExists(query.hash)) ? { kind: 'found', hash: query.hash, via: 'drv-path' } : { kind: 'not-found' };
      case 'output-path': {
        let drv = await this.redis.hget(OUTPUT_INDEX_KEY, query.hash);
        if (drv === null || !(await this.nodeExists(drv))) {
          await this.rebuildOutputIndex();
          drv = await this.redis.hget(OUTPUT_INDEX_KEY, query.hash);
        }
        return drv !== null && (await this.nodeExists(drv)) ? { kind: 'found', hash: drv, via: 'output-path' } : { kind: 'not-found' };
      }
      case 'hash-prefix': {
        const drvs = await this.drvHashesWithPrefix(query.prefix);
        if (drvs.length > 0) return this.pick(drvs, 'hash-prefix');
        await this.rebuildOutputIndex();
        const viaOutputs = await this.outputHashesWithPrefix(query.prefix);
        return viaOutputs.length > 0 ? this.pick(viaOutputs, 'output-hash-prefix') : { kind: 'not-found' };
      }
    }
  }

  private async pick(hashes: string[], via: 'hash-prefix' | 'output-hash-prefix'): Promise<Resolution> {
    const unique = [...new Set(hashes)].sort();
    if (unique.length === 1) return { kind: 'found', hash: unique[0]!, via };
    const shown = unique.slice(0, MAX_CANDIDATES);
    const pipeline = this.redis.pipeline();
    for (const h of shown) pipeline.hmget(redisKeys.drv(h), 'path', 'status');
    const replies = (await pipeline.exec()) ?? [];
    const candidates = shown.map((hash, i) => {
      const [path, status] = (replies[i]?.[1] as [string | null, string | null] | undefined) ?? [null, null];
      return { hash, drvPath: path ?? `${STORE_DIR}/${hash}-?.drv`, status: status ?? 'unknown' };
    });
    return { kind: 'ambiguous', candidates, total: unique.length };
  }

  private async nodeExists(hash: string): Promise<boolean> {
    return (await this.redis.hexists(redisKeys.drv(hash), 'path')) === 1;
  }

  /** Drv hashes of nodes whose key starts with the prefix (the prefix is base-32, so it holds no glob characters). */
  private async drvHashesWithPrefix(prefix: string): Promise<string[]> {
    const found: string[] = [];
    await this.scanNodeKeys(`${REDIS_PREFIX}:drv:${prefix}*`, async (hashes) => {
      found.push(...hashes);
    });
    return found;
  }

  private async outputHashesWithPrefix(prefix: string): Promise<string[]> {
    const found: string[] = [];
    let cursor = '0';
    do {
      const [next, flat] = await this.redis.hscan(OUTPUT_INDEX_KEY, cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      for (let i = 1; i < flat.length; i += 2) found.push(flat[i]!);
    } while (cursor !== '0');
    return found;
  }

  /** Scans every node and records each output's derivation. */
  async rebuildOutputIndex(): Promise<number> {
    let indexed = 0;
    await this.scanNodeKeys(`${REDIS_PREFIX}:drv:*`, async (hashes) => {
      const pipeline = this.redis.pipeline();
      for (const h of hashes) pipeline.hget(redisKeys.drv(h), 'job');
      const replies = (await pipeline.exec()) ?? [];
      const entries: Record<string, string> = {};
      hashes.forEach((h, i) => {
        const job = replies[i]?.[1];
        if (typeof job !== 'string') return;
        let outputs: unknown;
        try {
          outputs = (JSON.parse(job) as { outputs?: unknown }).outputs;
        } catch {
          return;
        }
        if (outputs === null || typeof outputs !== 'object') return;
        for (const path of Object.values(outputs as Record<string, unknown>)) {
          if (typeof path !== 'string' || !path.startsWith(`${STORE_DIR}/`)) continue;
          const outHash = path.slice(STORE_DIR.length + 1, STORE_DIR.length + 33);
          if (outHash.length === 32) entries[outHash] = h;
        }
      });
      if (Object.keys(entries).length > 0) {
        await this.redis.hset(OUTPUT_INDEX_KEY, entries);
        indexed += Object.keys(entries).length;
      }
    });
    return indexed;
  }

  private async scanNodeKeys(pattern: string, onBatch: (hashes: string[]) => Promise<void>): Promise<void> {
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000, 'TYPE', 'hash');
      cursor = next;
      const hashes = keys.map((k) => NODE_KEY_RE.exec(k)?.[1]).filter((h): h is string => h !== undefined);
      if (hashes.length > 0) await onBatch(hashes);
    } while (cursor !== '0');
  }
}
