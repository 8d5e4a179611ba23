import type { Redis } from 'ioredis';
import { NixfarmError } from './errors.js';
import { redactRedisUrl } from './redis-connection.js';
import { COORDINATOR_REDIS_COMMANDS, WORKER_REDIS_COMMANDS, type RedisRole } from './redis-acl.js';
import { REDIS_PREFIX } from './redis-keys.js';
import { isSentinelUrl, parseSentinelUrl } from './redis-sentinel.js';

/** The Redis user may not run a command, or touch a key or channel, that nixfarm needs: no retry can fix that, an operator must. */
export class RedisNoPermissionError extends NixfarmError {
  constructor(
    readonly missing: readonly string[],
    what: string,
  ) {
    super(
      'redis-no-permission',
      `the Redis user ${what} lacks ${missing.join(', ')}; grant ${missing.length === 1 ? 'it' : 'them'} (\`nixfarm redis-acl\` prints the users a farm needs) or use another user in the Redis URL`,
      { retryable: false, details: { missing } },
    );
  }
}

/**
 * Redis's refusal, as a RedisNoPermissionError naming what was refused, or
 * undefined for any other error. A command sent directly is named by Redis
 * (`NOPERM ... run the 'xadd' command`); one inside a Lua script is not.
 */
export function noPermissionIn(error: unknown, what: string): RedisNoPermissionError | undefined {
  const message = error instanceof Error ? error.message : String(error);
  const command = /^NOPERM .*'([^']+)' command/.exec(message)?.[1];
  if (command !== undefined) return new RedisNoPermissionError([`the command ${command.toLowerCase()}`], what);
  if (/^NOPERM .*keys/.test(message)) return new RedisNoPermissionError([`a key outside its patterns (nixfarm's keys are ${REDIS_PREFIX}:*)`], what);
  if (/^NOPERM .*channels/.test(message))
    return new RedisNoPermissionError([`a channel outside its patterns (nixfarm's channels are ${REDIS_PREFIX}:*)`], what);
  if (/user executing the script can't run this command/.test(message)) return new RedisNoPermissionError(['a command inside a BullMQ Lua script'], what);
  if (/user executing the script can't access/.test(message)) return new RedisNoPermissionError(['a key a BullMQ Lua script uses'], what);
  return undefined;
}

const PROBE_KEY = `${REDIS_PREFIX}:permission-probe`;

/**
 * The arguments each probed command is sent with (after its name): the right
 * count, a key and channel under the prefix. Queued, never run, so only the
 * name, the keys and the channels matter. Absent: the command takes one key.
 */
const PROBE_ARGS: Record<string, readonly string[]> = {
  info: [],
  ping: [],
  'client|setname': ['nixfarm-permission-probe'],
  eval: ['return 1', '0'],
  evalsha: ['0'.repeat(40), '0'],
  publish: [PROBE_KEY, 'x'],
  scan: ['0'],
  bzpopmin: [PROBE_KEY, '0'],
  xread: ['STREAMS', PROBE_KEY, '0'],
  xreadgroup: ['GROUP', 'g', 'c', 'STREAMS', PROBE_KEY, '0'],
  xgroup: ['DESTROY', PROBE_KEY, 'g'],
  xack: [PROBE_KEY, 'g', '0-1'],
  xadd: [PROBE_KEY, '*', 'f', 'v'],
  xtrim: [PROBE_KEY, 'MAXLEN', '0'],
  xrange: [PROBE_KEY, '-', '+'],
  hincrby: [PROBE_KEY, 'f', '1'],
  hscan: [PROBE_KEY, '0'],
  hset: [PROBE_KEY, 'f', 'v'],
  hsetnx: [PROBE_KEY, 'f', 'v'],
  hmset: [PROBE_KEY, 'f', 'v'],
  lrem: [PROBE_KEY, '0', 'v'],
  rpoplpush: [PROBE_KEY, PROBE_KEY],
  ...Object.fromEntries(
    ['hdel', 'hexists', 'hget', 'hmget', 'lindex', 'set', 'expire', 'pexpire', 'sadd', 'srem', 'rpush', 'lpush', 'zrem', 'zscore', 'sismember'].map((c) => [
      c,
      [PROBE_KEY, '1'],
    ]),
  ),
  ...Object.fromEntries(
    ['lrange', 'ltrim', 'zadd', 'zcount', 'zrange', 'zrangebyscore', 'zremrangebyrank', 'zremrangebyscore', 'zrevrange', 'zrevrangebyscore'].map((c) => [
      c,
      [PROBE_KEY, '0', '0'],
    ]),
  ),
};

/**
 * Tries once, at start, every command the role needs (on a key and channel
 * under nixfarm's prefix), so a user that lacks one is named at start rather
 * than failing a build later, perhaps inside a Lua script whose error does not
 * say which. The commands are queued in a MULTI on a connection of their own
 * and never run: Redis checks permissions as it queues, and the connection is
 * dropped without EXEC. Throws RedisNoPermissionError naming every one missing.
 */
export async function probeRedisPermissions(redis: Redis, role: RedisRole, what: string): Promise<void> {
  const commands = role === 'worker' ? WORKER_REDIS_COMMANDS : COORDINATOR_REDIS_COMMANDS;
  const probe = redis.duplicate({ lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  const missing: string[] = [];
  const refused = (error: unknown, command: string): void => {
    const denial = noPermissionIn(error, what);
    if (denial === undefined) return;
    missing.push(/'([^']+)' command/.test((error as Error).message) ? `the command ${command}` : `${command} on ${PROBE_KEY}`);
  };
  try {
    await probe.connect();
    // MULTI and EXEC themselves: an empty transaction runs nothing.
    for (const command of ['multi', 'exec']) await probe.call(command).catch((error: unknown) => refused(error, command));
    if (missing.length > 0) throw new RedisNoPermissionError(missing, what);
    await probe.call('multi');
    // SUBSCRIBE puts ioredis's connection in subscriber mode, where it sends nothing else: the channel commands come last.
    const channelCommands = commands.filter((c) => c === 'subscribe' || c === 'unsubscribe');
    for (const command of [...commands.filter((c) => !['multi', 'exec', ...channelCommands].includes(c)), ...channelCommands]) {
      const [name, sub] = command.split('|') as [string, string | undefined];
      await probe.call(name, ...(sub === undefined ? [] : [sub]), ...(PROBE_ARGS[command] ?? [PROBE_KEY])).catch((error: unknown) => refused(error, command));
    }
  } finally {
    probe.disconnect();
  }
  if (missing.length > 0) throw new RedisNoPermissionError(missing, what);
}

/** The user a Redis URL logs in as, with the URL (password hidden), for messages: `"nixfarm-worker" at redis://...`. */
export function redisUserOf(url: string): string {
  let user = 'default';
  try {
    // a Sentinel URL names several hosts, which URL cannot parse: its own parser reads the user
    user = (isSentinelUrl(url) ? parseSentinelUrl(url).username : decodeURIComponent(new URL(url).username)) || 'default';
  } catch {
    // not a URL: connectRedis has said so already
  }
  return `"${user}" at ${redactRedisUrl(url)}`;
}
