import { redisKeys, type TerminalStatus } from '@nixfarm/shared';
import { encodeNode } from '../derivation-node.js';
import { readyFrom, type ReadyDerivation } from '../ready-derivation.js';
import { STALE_REPORT_LUA } from '../lua/stale-report.js';
import { TERMINATE_LUA } from '../lua/terminate.js';
import { listOf, type GraphOperation } from './graph-operation.js';
import type { BuildAttempt, FinishDetails } from '../graph-transitions.js';

/** Successful builds remembered per node: far more than any retry policy allows. */
const MAX_SUCCESSES = 20;

export interface FinishCall {
  hash: string;
  status: TerminalStatus;
  now: string;
  details: FinishDetails;
  /** who reports it; absent: the coordinator's own decision */
  reporter?: BuildAttempt;
  /** a build whose outputs differ from the coordinator's copy */
  divergence?: string;
}

export type FinishReply =
  | { kind: 'finished'; released: ReadyDerivation[]; dependencyFailed: string[]; finishedRuns: string[]; runIds: string[] }
  /** the node had ended already (a duplicate or late report), or is unknown */
  | { kind: 'ended' }
  | { kind: 'stale'; why: string };

/** The reporter as the Lua scripts compare it (every field a string, as Redis stores them). */
export function reporterArg(reporter: BuildAttempt | undefined): string {
  return reporter === undefined ? '' : JSON.stringify({ worker: reporter.worker, job: reporter.jobId, try: String(reporter.attempt) });
}

/**
 * Ends a node: releases dependents whose inputs are now all built, or marks
 * every transitive dependent dependency-failed; counts the end in each of its
 * runs. A success from any attempt counts (its outputs were checked valid);
 * any other end only from the running attempt. Every successful build is
 * remembered, a late duplicate too, and so is a divergent one.
 */
export const finishDerivationOperation: GraphOperation<FinishCall, FinishReply> = {
  name: 'nixfarmFinish',
  numberOfKeys: 3,
  lua: `
--[[
  Ends a node with a terminal status.
  KEYS[1] the node (nixfarm:drv:<hash>)
  KEYS[2] the node's runs (nixfarm:drv:<hash>:runs)
  KEYS[3] the node's dependents (nixfarm:drv:<hash>:dependents)
  ARGV[1] terminal status
  ARGV[2] now (ms, the coordinator's clock)
  ARGV[3] fields JSON {worker, finishedAt, timings, error, logTail, outputs} (encoded node fields)
  ARGV[4] reporter JSON {worker, job, try} ('' for the coordinator's own decision)
  ARGV[5] divergence ('' if none)
  Keys built from data: dependents' nodes and dependents (transitively on failure), each run's record.
  Returns {kind='ok', released, dependencyFailed, finishedRuns, runs}, each released entry {hash, READY_FIELDS...};
  {kind='ended'} when the node is unknown or had ended (a duplicate report);
  {kind='stale', why} when the report came from an attempt that no longer decides the build.
]]
${TERMINATE_LUA}
${STALE_REPORT_LUA}
local key = KEYS[1]
local status, now = ARGV[1], ARGV[2]
local fields = cjson.decode(ARGV[3])
local reporterJson = ARGV[4]
local f = redis.call('HMGET', key, 'status', 'successes')
local current = f[1]
if not current then return cjson.encode({ kind = 'ended' }) end
-- appliedAt: the coordinator's clock (finishedAt may come from a worker's)
local args = { 'status', status, 'finishedAt', now, 'appliedAt', now }
if status == 'succeeded' and reporterJson ~= '' then
  -- the first success is written as it came (no JSON work on the hot path); later ones
  -- once per attempt: a batch applied again after a crash does not count a build twice
  local list = nil
  if not f[2] then
    list = '[' .. reporterJson .. ']'
  else
    local successes, reporter = cjson.decode(f[2]), cjson.decode(reporterJson)
    local known = false
    for _, s in ipairs(successes) do
      if s.worker == reporter.worker and s.job == reporter.job and s.try == reporter.try then known = true end
    end
    if not known and #successes < ${MAX_SUCCESSES} then
      successes[#successes + 1] = reporter
      list = cjson.encode(successes)
    end
  end
  if list then
    -- written with the finish below, or alone when the node had ended already (a duplicate still counts as a build)
    if TERMINAL[current] then redis.call('HSET', key, 'successes', list)
    else args[#args + 1] = 'successes'; args[#args + 1] = list end
  end
end
if ARGV[5] ~= '' then redis.call('HSET', key, 'divergentBuild', ARGV[5]) end
if TERMINAL[current] then return cjson.encode({ kind = 'ended' }) end
if status ~= 'succeeded' and reporterJson ~= '' then
  local stale = staleReport(key, cjson.decode(reporterJson))
  if stale then return cjson.encode({ kind = 'stale', why = stale }) end
end
for k, v in pairs(fields) do args[#args + 1] = k; args[#args + 1] = v end
redis.call('HSET', key, unpack(args))
local finishedRuns, released, depFailed = {}, {}, {}
terminate(KEYS[2], status, finishedRuns)
if status == 'succeeded' then
  for _, dep in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local depKey = drvKey(dep)
    if redis.call('HGET', depKey, 'status') == 'waiting' then
      if redis.call('HINCRBY', depKey, 'pending', -1) <= 0 then
        redis.call('HSET', depKey, 'status', 'queued', 'queuedAt', now)
        local ready = redis.call('HMGET', depKey, unpack(READY_FIELDS))
        table.insert(ready, 1, dep)
        released[#released + 1] = ready
      end
    end
  end
else
  local name = redis.call('HGET', key, 'path')
  local todo = redis.call('SMEMBERS', KEYS[3])
  while #todo > 0 do
    local dep = table.remove(todo)
    local depKey = drvKey(dep)
    local s = redis.call('HGET', depKey, 'status')
    if s == 'waiting' or s == 'queued' then
      redis.call('HSET', depKey, 'status', 'dependency-failed', 'finishedAt', now, 'error', 'input ' .. name .. ' ' .. status)
      terminate(runsKey(dep), 'dependency-failed', finishedRuns)
      depFailed[#depFailed + 1] = dep
      for _, next in ipairs(redis.call('SMEMBERS', dependentsKey(dep))) do todo[#todo + 1] = next end
    end
  end
end
return cjson.encode({ kind = 'ok', released = released, dependencyFailed = depFailed, finishedRuns = finishedRuns, runs = redis.call('SMEMBERS', KEYS[2]) })
`,
  args: (c) => [
    redisKeys.drv(c.hash),
    redisKeys.drvRuns(c.hash),
    redisKeys.drvDependents(c.hash),
    c.status,
    c.now,
    JSON.stringify(encodeNode(c.details)),
    reporterArg(c.reporter),
    c.divergence ?? '',
  ],
  decode: (reply) => {
    if (reply.kind === 'stale') return { kind: 'stale', why: String(reply.why) };
    if (reply.kind !== 'ok') return { kind: 'ended' };
    return {
      kind: 'finished',
      released: listOf<Array<string | false>>(reply.released).map(([hash, ...fields]) => readyFrom(String(hash), fields)),
      dependencyFailed: listOf<string>(reply.dependencyFailed),
      finishedRuns: listOf<string>(reply.finishedRuns),
      runIds: listOf<string>(reply.runs),
    };
  },
};
