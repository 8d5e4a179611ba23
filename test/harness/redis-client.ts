import { Redis, type RedisOptions } from 'ioredis';
import { isSentinelUrl, newSentinelClient, parseSentinelUrl } from '@nixfarm/shared';

/** A client for a farm's Redis URL, a plain one or redis+sentinel:// (ioredis itself reads only the first kind). */
export function redisClient(url: string, options: RedisOptions): Redis {
  return isSentinelUrl(url) ? newSentinelClient(parseSentinelUrl(url), options) : new Redis(url, options);
}
