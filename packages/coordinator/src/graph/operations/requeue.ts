import { redisKeys } from '@nixfarm/shared';
import { readyFrom, type ReadyDerivation } from '../ready-derivation.js';
import { STALE_REPORT_LUA } from '../lua/stale-report.js';
import { reporterArg } from './finish-derivation.js';
import type { BuildAttempt } from '../graph-transitions.js';
import type { GraphOperation } from './graph-operation.js';

export interface RequeueCall {
  hash: string;
  now: string;
  error: string;
  reporter?: BuildAttempt;
}

export type RequeueReply = { kind: 'requeued'; ready: ReadyDerivation } | { kind: 'not-pending' } | { kind: 'stale'; why: string };

/**
 * Puts an aborted (infrastructure) attempt back in the queue, under a new
 * job; the reporter's job is retired up to its try, so reports of its other
 * tries (a worker that lost the lock to the one that aborted) are stale.
 */
export const requeueOperation: GraphOperation<RequeueCall, RequeueReply> = {
  name: 'nixfarmRequeue',
  numberOfKeys: 1,
  lua: `
--[[
  Queues a running or queued node again.
  KEYS[1] the node (nixfarm:drv:<hash>)
  ARGV[1] now (ms)
  ARGV[2] error: why it is retried
  ARGV[3] reporter JSON {worker, job, try} ('' if none)
  Returns {kind='ok', ready = READY_FIELDS values}; {kind='not-pending'} if the node was not running or queued;
  {kind='stale', why} if the report is stale: then nothing changes.
]]
${STALE_REPORT_LUA}
local key = KEYS[1]
local status = redis.call('HGET', key, 'status')
if status ~= 'running' and status ~= 'queued' then return cjson.encode({ kind = 'not-pending' }) end
local reporter = nil
if ARGV[3] ~= '' then reporter = cjson.decode(ARGV[3]) end
local stale = staleReport(key, reporter)
if stale then return cjson.encode({ kind = 'stale', why = stale }) end
if reporter ~= nil then
  local retired = {}
  local field = redis.call('HGET', key, 'retiredJobs')
  if field then retired = cjson.decode(field) end
  local last = retired[reporter.job]
  if last == nil or tonumber(reporter.try) > tonumber(last) then retired[reporter.job] = reporter.try end
  redis.call('HSET', key, 'retiredJobs', cjson.encode(retired))
end
redis.call('HSET', key, 'status', 'queued', 'queuedAt', ARGV[1], 'error', ARGV[2])
redis.call('HDEL', key, 'worker', 'startedAt', 'runningAttempt')
return cjson.encode({ kind = 'ok', ready = redis.call('HMGET', key, unpack(READY_FIELDS)) })
`,
  args: (c) => [redisKeys.drv(c.hash), c.now, c.error, reporterArg(c.reporter)],
  decode: (reply) => {
    if (reply.kind === 'stale') return { kind: 'stale', why: String(reply.why) };
    if (reply.kind !== 'ok') return { kind: 'not-pending' };
    // hash is filled in by the caller, which knows it
    return { kind: 'requeued', ready: readyFrom('', Array.isArray(reply.ready) ? (reply.ready as Array<string | false>) : []) };
  },
};
