import { redisKeys } from '@nixfarm/shared';
import { listOf, type GraphOperation } from './graph-operation.js';

export interface MarkStartedCall {
  hash: string;
  worker: string;
  /** the worker's clock */
  at: number;
  /** the BullMQ job and its try; absent when the caller does not say (every later report then counts) */
  job?: { jobId: string; attempt: number };
}

export type MarkStartedReply = { kind: 'started'; runIds: string[] } | { kind: 'not-pending' } | { kind: 'stale' };

/**
 * The start of a job's try becomes the running attempt. A start from a job a
 * retry replaced, or of an earlier try of the running job, is stale; the same
 * start applied again (a batch re-read after a crash) is counted once.
 */
export const markStartedOperation: GraphOperation<MarkStartedCall, MarkStartedReply> = {
  name: 'nixfarmMarkStarted',
  numberOfKeys: 2,
  lua: `
--[[
  Marks a node running on a worker.
  KEYS[1] the node (nixfarm:drv:<hash>)
  KEYS[2] the node's runs (nixfarm:drv:<hash>:runs)
  ARGV[1] worker
  ARGV[2] when it started (the worker's clock, ms)
  ARGV[3] BullMQ job id ('' when unknown)
  ARGV[4] the job's try ('' when unknown)
  Returns {kind='ok', runs}: running that attempt (also when applied before);
  {kind='not-pending'}: the node is not queued or running; {kind='stale'}: a replaced job or an earlier try.
]]
local key = KEYS[1]
local worker, now, job, try = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- one read for every check: this runs once per build
local f = redis.call('HMGET', key, 'status', 'runningAttempt', 'retiredJobs')
local status = f[1]
if status ~= 'queued' and status ~= 'running' then return cjson.encode({ kind = 'not-pending' }) end
if job ~= '' then
  if f[3] then
    local last = cjson.decode(f[3])[job]
    if last ~= nil and tonumber(try) <= tonumber(last) then return cjson.encode({ kind = 'stale' }) end
  end
  local attempt = worker .. ' ' .. try .. ' ' .. job
  if status == 'running' and f[2] then
    if f[2] == attempt then return cjson.encode({ kind = 'ok', runs = redis.call('SMEMBERS', KEYS[2]) }) end
    local _, runningTry, runningJob = string.match(f[2], '^(%S+) (%d+) (.*)$')
    if runningJob == job and tonumber(try) < tonumber(runningTry) then return cjson.encode({ kind = 'stale' }) end
  end
  redis.call('HSET', key, 'status', 'running', 'worker', worker, 'startedAt', now, 'runningAttempt', attempt)
  redis.call('HDEL', key, 'unsupported')
else
  redis.call('HSET', key, 'status', 'running', 'worker', worker, 'startedAt', now)
  -- which attempt runs is unknown: every later report counts, as before attempts were recorded
  redis.call('HDEL', key, 'unsupported', 'runningAttempt', 'retiredJobs')
end
redis.call('HINCRBY', key, 'attempts', 1)
return cjson.encode({ kind = 'ok', runs = redis.call('SMEMBERS', KEYS[2]) })
`,
  args: (c) => [redisKeys.drv(c.hash), redisKeys.drvRuns(c.hash), c.worker, String(c.at), c.job?.jobId ?? '', c.job === undefined ? '' : String(c.job.attempt)],
  decode: (reply) => {
    if (reply.kind === 'ok') return { kind: 'started', runIds: listOf<string>(reply.runs) };
    return reply.kind === 'stale' ? { kind: 'stale' } : { kind: 'not-pending' };
  },
};
