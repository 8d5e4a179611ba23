import { redisKeys } from '@nixfarm/shared';
import { listOf, type GraphOperation } from './graph-operation.js';

export interface CancelRunCall {
  runId: string;
  now: string;
}

export type CancelRunReply = { kind: 'cancelled'; cancelled: Array<{ hash: string; was: string }> } | { kind: 'not-running' };

/** Cancels a run: every pending derivation no other running run needs ends as cancelled; shared ones stay for the runs that still need them. */
export const cancelRunOperation: GraphOperation<CancelRunCall, CancelRunReply> = {
  name: 'nixfarmCancelRun',
  numberOfKeys: 3,
  lua: `
--[[
  Cancels a running run and its pending derivations that no other running run needs.
  KEYS[1] the run record (nixfarm:run:<id>)
  KEYS[2] the run's derivations (nixfarm:run:<id>:drvs)
  KEYS[3] the set of active runs (nixfarm:runs:active)
  ARGV[1] run id
  ARGV[2] now (ms)
  Keys built from data: each derivation's node and runs, and those runs' records.
  Returns {kind='ok', cancelled = [{hash, was}]} (was: the status before); {kind='not-running'} when the run is not running.
]]
local runId, now = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return cjson.encode({ kind = 'not-running' }) end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finishedAt', now)
redis.call('SREM', KEYS[3], runId)
local out = {}
for _, hash in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = drvKey(hash)
  local status = redis.call('HGET', key, 'status')
  if status == 'waiting' or status == 'queued' or status == 'running' then
    local neededElsewhere = false
    for _, other in ipairs(redis.call('SMEMBERS', runsKey(hash))) do
      if other ~= runId and redis.call('HGET', runKey(other), 'status') == 'running' then neededElsewhere = true end
    end
    if not neededElsewhere then
      redis.call('HSET', key, 'status', 'cancelled', 'finishedAt', now, 'error', 'run ' .. runId .. ' cancelled')
      out[#out + 1] = { hash = hash, was = status }
    end
  end
end
return cjson.encode({ kind = 'ok', cancelled = out })
`,
  args: (c) => [redisKeys.run(c.runId), redisKeys.runDrvs(c.runId), redisKeys.activeRuns, c.runId, c.now],
  decode: (reply) => (reply.kind === 'ok' ? { kind: 'cancelled', cancelled: listOf<{ hash: string; was: string }>(reply.cancelled) } : { kind: 'not-running' }),
};
