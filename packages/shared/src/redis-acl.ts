import { createHash } from 'node:crypto';
import { REDIS_PREFIX } from './redis-keys.js';

/** Who a Redis user is for: the coordinator, or the workers (one user all workers share). */
export type RedisRole = 'coordinator' | 'worker';

/** Every key (BullMQ's under BULLMQ_PREFIX too) and every pub/sub channel nixfarm uses. */
const REDIS_KEY_PATTERN = `${REDIS_PREFIX}:*`;

/**
 * The BullMQ Lua scripts a worker runs (moveToActive, moveToFinished,
 * extendLock(s), moveStalledJobsToWait, moveJobFromActiveToWait, getCounts,
 * getRanges, releaseLock): Redis checks each command inside a script against
 * the caller's ACL, so the worker needs these too. Read from bullmq 6.7's
 * scripts (with their includes, and RPUSH/LPUSH, LLEN/ZCARD they pick at run time).
 */
const BULLMQ_WORKER_SCRIPT_COMMANDS = [
  'del',
  'exists',
  'get',
  'hdel',
  'hexists',
  'hget',
  'hgetall',
  'hincrby',
  'hmget',
  'hmset',
  'hset',
  'incr',
  'lindex',
  'llen',
  'lpush',
  'lrange',
  'lrem',
  'ltrim',
  'pexpire',
  'pttl',
  'rpop',
  'rpoplpush',
  'rpush',
  'sadd',
  'scard',
  'set',
  'smembers',
  'srem',
  'xadd',
  'xtrim',
  'zadd',
  'zcard',
  'zcount',
  'zpopmin',
  'zrange',
  'zrangebyscore',
  'zrem',
  'zremrangebyrank',
  'zremrangebyscore',
  'zrevrange',
  'zrevrangebyscore',
  'zscore',
] as const;

/**
 * What a worker sends itself: BullMQ's connection set-up (INFO for the server
 * version, CLIENT SETNAME), the scripts (EVALSHA, EVAL when Redis lacks the
 * script), the heartbeat, reports and build logs (MULTI/EXEC, SET, SADD, SREM,
 * DEL, XADD, EXPIRE), the queue lists and registry (SMEMBERS, MGET), a
 * check's NAR (RPUSH, EXPIRE) and the wake-up and cancel channels (SUBSCRIBE).
 */
const WORKER_OWN_COMMANDS = [
  'info',
  'client|setname',
  'ping',
  'eval',
  'evalsha',
  'multi',
  'exec',
  'smembers',
  'mget',
  'get',
  'set',
  'sadd',
  'srem',
  'del',
  'xadd',
  'expire',
  'rpush',
  'subscribe',
  'unsubscribe',
] as const;

/** The commands a worker's user must be allowed, each once, sorted: what `nixfarm redis-acl` grants and a worker probes at start. */
export const WORKER_REDIS_COMMANDS: readonly string[] = [...new Set([...WORKER_OWN_COMMANDS, ...BULLMQ_WORKER_SCRIPT_COMMANDS])].sort();

/**
 * Commands the coordinator is known to use (its own Lua included), probed at
 * start. Its user gets more (every command outside @dangerous, and INFO):
 * it adds, removes, counts and exports BullMQ's queues through scripts that
 * touch many more commands, on code paths a start cannot try.
 */
export const COORDINATOR_REDIS_COMMANDS: readonly string[] = [
  ...new Set([
    ...WORKER_REDIS_COMMANDS,
    'bzpopmin',
    'exists',
    'hscan',
    'hsetnx',
    'publish',
    'scan',
    'sismember',
    'xack',
    'xgroup',
    'xrange',
    'xread',
    'xreadgroup',
  ]),
].sort();

/** The ACL rules of a role's user, after `on` and its password: keys, channels, commands. */
export function redisAclRules(role: RedisRole): string[] {
  const scope = ['resetkeys', `~${REDIS_KEY_PATTERN}`, 'resetchannels', `&${REDIS_KEY_PATTERN}`];
  if (role === 'coordinator') return [...scope, '+@all', '-@dangerous', '+info'];
  return [...scope, '-@all', ...WORKER_REDIS_COMMANDS.map((c) => `+${c}`)];
}

export interface RedisAclUser {
  name: string;
  role: RedisRole;
  /** the cleartext password: only its SHA-256 is printed */
  password: string;
}

/** How the lines are written: commands for redis-cli, or lines of an aclfile (users.acl). */
export type RedisAclFormat = 'acl-setuser' | 'users-acl';

/**
 * One line per user: `ACL SETUSER NAME reset on #SHA256 RULES...` for
 * redis-cli, or `user NAME on #SHA256 RULES...` for an aclfile. The password
 * is given by its hash (Redis accepts `#` followed by the hex SHA-256), so the
 * lines can be shown, logged and kept without revealing it.
 */
export function redisAclLine(user: RedisAclUser, format: RedisAclFormat): string {
  const hash = createHash('sha256').update(user.password, 'utf8').digest('hex');
  const rules = ['on', `#${hash}`, ...redisAclRules(user.role)];
  return format === 'acl-setuser' ? ['ACL', 'SETUSER', user.name, 'reset', ...rules].join(' ') : ['user', user.name, ...rules].join(' ');
}
