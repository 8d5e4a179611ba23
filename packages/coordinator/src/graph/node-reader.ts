import type { Redis } from 'ioredis';
import { redisKeys } from '@nixfarm/shared';
import { decodeNode, zipFields, type NodeField, type NodeRecord } from './derivation-node.js';

/** Node keys as SCAN returns them: the hash part is what follows the prefix. */
const NODE_KEY_RE = new RegExp(`^${redisKeys.drv('')}([0-9a-df-np-sv-z]{32})$`);

/**
 * Reads derivation nodes, decoded by the node codec: the one way any module
 * outside graph/ looks at a node. Reads only; the graph's operations write.
 */
export class NodeReader {
  constructor(private readonly redis: Redis) {}

  /** The fields asked for (every field when none are named); undefined when the node is unknown (no path). */
  async read<F extends NodeField>(hash: string, fields: readonly F[]): Promise<NodeRecord<F | 'path'> | undefined> {
    const [node] = await this.readMany([hash], fields);
    return node;
  }

  /** Every field of a node; undefined when it is unknown. */
  async readAll(hash: string): Promise<NodeRecord | undefined> {
    const raw = await this.redis.hgetall(redisKeys.drv(hash));
    return raw.path === undefined ? undefined : decodeNode(raw);
  }

  /** The fields asked for of each node, in one round trip; undefined where a node is unknown (no path). */
  async readMany<F extends NodeField>(hashes: readonly string[], fields: readonly F[]): Promise<Array<NodeRecord<F | 'path'> | undefined>> {
    if (hashes.length === 0) return [];
    const asked = [...new Set<NodeField>(['path', ...fields])] as Array<F | 'path'>;
    const pipeline = this.redis.pipeline();
    for (const h of hashes) pipeline.hmget(redisKeys.drv(h), ...asked);
    const replies = (await pipeline.exec()) ?? [];
    return hashes.map((_, i) => {
      const [error, values] = replies[i] ?? [new Error('no reply from redis'), undefined];
      if (error) throw error;
      const raw = zipFields(asked, values as Array<string | null>);
      return raw.path === null || raw.path === undefined ? undefined : decodeNode(raw);
    });
  }

  /** Every field of each node, in one round trip (undefined where unknown). */
  async readAllMany(hashes: readonly string[]): Promise<Array<NodeRecord | undefined>> {
    if (hashes.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const h of hashes) pipeline.hgetall(redisKeys.drv(h));
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([, value]) => {
      const raw = value as Record<string, string> | null;
      return raw === null || raw.path === undefined ? undefined : decodeNode(raw);
    });
  }

  async exists(hash: string): Promise<boolean> {
    return (await this.redis.hexists(redisKeys.drv(hash), 'path')) === 1;
  }

  async runsOf(hash: string): Promise<string[]> {
    return this.redis.smembers(redisKeys.drvRuns(hash));
  }

  /**
   * The hash parts of every node whose hash starts with the prefix ('' for
   * all), in batches: SCAN, O(nodes in Redis), incremental so Redis stays
   * responsive. The prefix is base-32, so it holds no glob characters.
   */
  async scanHashes(prefix: string, onBatch: (hashes: string[]) => Promise<void>): Promise<void> {
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${redisKeys.drv(prefix)}*`, 'COUNT', 1000, 'TYPE', 'hash');
      cursor = next;
      const hashes = keys.map((k) => NODE_KEY_RE.exec(k)?.[1]).filter((h): h is string => h !== undefined);
      if (hashes.length > 0) await onBatch(hashes);
    } while (cursor !== '0');
  }
}
