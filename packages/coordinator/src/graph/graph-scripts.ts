/**
 * Lua scripts that change the build graph atomically, so that a coordinator
 * crash between two steps never leaves a node counted twice or a dependent
 * released before its input is recorded as built.
 *
 * Node hash fields: path name system features queue job status pending
 * attempts worker queuedAt startedAt finishedAt timings error logTail outputs.
 */

const TERMINAL = `local TERMINAL = { succeeded=true, failed=true, ['dependency-failed']=true, aborted=true, cancelled=true,
  ['timed-out']=true, ['log-limit-exceeded']=true, ['output-limit-exceeded']=true, ['cached-failure']=true, unsupported=true }`;

/** Marks a node terminal for each of its runs; collects runs that have nothing left. */
const TERMINATE = `
local function terminate(prefix, hash, status, finishedRuns)
  local runs = redis.call('SMEMBERS', prefix .. ':drv:' .. hash .. ':runs')
  for _, run in ipairs(runs) do
    local runKey = prefix .. ':run:' .. run
    if redis.call('HGET', runKey, 'status') == 'running' then
      if status ~= 'succeeded' then redis.call('HINCRBY', runKey, 'failed', 1) end
      local left = redis.call('HINCRBY', runKey, 'remaining', -1)
      if left <= 0 then finishedRuns[#finishedRuns + 1] = run end
    end
  end
end`;

/**
 * KEYS: none (single-instance Redis; keys are built from ARGV[1]).
 * ARGV: prefix, runId, now, rebuildFailed ('1' or '0'), nodes JSON [{hash, fields:{...}, inputs:[hash]}],
 * checkedAt (when the planner saw the outputs invalid; '' if unknown)
 * Nodes must come inputs first. A node that failed before is a cached failure
 * (unless rebuildFailed); a new node with an ended, unsuccessful input is
 * dependency-failed at once; new nodes with every input built are queued.
 * Returns: { ready, cachedFailures, dependencyFailed, { joinedCount } }
 */
export const REGISTER_RUN = `
${TERMINAL}
local prefix, runId, now, rebuildFailed = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local nodes = cjson.decode(ARGV[5])
local checkedAt = tonumber(ARGV[6])
local runKey = prefix .. ':run:' .. runId
local ready, cached, depFailed = {}, {}, {}
local joined, remaining, failed = 0, 0, 0
-- Statuses this call has set: an input registered earlier in the call needs no HGET.
local known = {}
local function statusOf(hash)
  local s = known[hash]
  if s == nil then s = redis.call('HGET', prefix .. ':drv:' .. hash, 'status') end
  return s
end
-- The run's members are added in groups, far below Lua's unpack limit.
local members = {}
local function flushMembers()
  if #members > 0 then redis.call('SADD', runKey .. ':drvs', unpack(members)) end
  members = {}
end
for _, node in ipairs(nodes) do
  local key = prefix .. ':drv:' .. node.hash
  local status = redis.call('HGET', key, 'status')
  redis.call('SADD', key .. ':runs', runId)
  members[#members + 1] = node.hash
  if #members >= 1000 then flushMembers() end
  for _, input in ipairs(node.inputs) do
    redis.call('SADD', prefix .. ':drv:' .. input .. ':dependents', node.hash)
  end
  if (status == 'failed' or status == 'cached-failure') and not rebuildFailed then
    redis.call('HSET', key, 'status', 'cached-failure')
    failed = failed + 1
    cached[#cached + 1] = node.hash
    known[node.hash] = 'cached-failure'
  elseif status and not TERMINAL[status] then
    joined = joined + 1
    remaining = remaining + 1
    known[node.hash] = status
  elseif status == 'succeeded' and checkedAt and tonumber(redis.call('HGET', key, 'appliedAt') or '0') >= checkedAt then
    -- built (and its outputs checked valid) after the planner looked: rebuilding would wait on a job id BullMQ already used
    known[node.hash] = 'succeeded'
  else
    local pending, brokenInput = 0, nil
    for _, input in ipairs(node.inputs) do
      local inputStatus = statusOf(input)
      if inputStatus and TERMINAL[inputStatus] and inputStatus ~= 'succeeded' then
        brokenInput = redis.call('HGET', prefix .. ':drv:' .. input, 'path') .. ' ' .. inputStatus
      elseif inputStatus ~= 'succeeded' then
        pending = pending + 1
      end
    end
    -- One write per new node, with the state it ends in.
    local args
    if brokenInput then
      args = { 'status', 'dependency-failed', 'pending', 0, 'finishedAt', now, 'error', 'input ' .. brokenInput }
      failed = failed + 1
      depFailed[#depFailed + 1] = node.hash
    elseif pending == 0 then
      args = { 'status', 'queued', 'pending', 0, 'queuedAt', now }
      remaining = remaining + 1
      ready[#ready + 1] = node.hash
    else
      args = { 'status', 'waiting', 'pending', pending }
      remaining = remaining + 1
    end
    known[node.hash] = args[2]
    args[#args + 1] = 'attempts'; args[#args + 1] = 0
    args[#args + 1] = 'createdAt'; args[#args + 1] = now
    for k, v in pairs(node.fields) do args[#args + 1] = k; args[#args + 1] = v end
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(args))
  end
end
flushMembers()
if remaining > 0 then redis.call('HINCRBY', runKey, 'remaining', remaining) end
if failed > 0 then redis.call('HINCRBY', runKey, 'failed', failed) end
return { ready, cached, depFailed, { tostring(joined) } }
`;

/** The fields a ready node is queued with, in the order DerivationGraph reads them. */
const READY_FIELDS = `local READY_FIELDS = { 'queue', 'job', 'priority', 'attempts', 'preferLocal', 'criticalPath' }`;

/**
 * ARGV: prefix, hash, worker, now
 * Returns the node's runs if it moved to running, 0 if the report was stale.
 */
export const MARK_STARTED = `
local key = ARGV[1] .. ':drv:' .. ARGV[2]
local status = redis.call('HGET', key, 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('HSET', key, 'status', 'running', 'worker', ARGV[3], 'startedAt', ARGV[4])
redis.call('HDEL', key, 'unsupported')
redis.call('HINCRBY', key, 'attempts', 1)
return redis.call('SMEMBERS', key .. ':runs')
`;

/**
 * ARGV: prefix, hash, status (terminal), now, fields JSON {worker, timings, error, logTail, outputs}
 * Returns: { released, dependency-failed hashes, finished run ids, the node's runs }, where each
 * released entry is { hash, READY_FIELDS... } (what queueing it needs, read in the same step);
 * or an empty table when the node was already terminal (a duplicate report).
 */
export const FINISH_DERIVATION = `
${TERMINAL}
${TERMINATE}
${READY_FIELDS}
local prefix, hash, status, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local fields = cjson.decode(ARGV[5])
local key = prefix .. ':drv:' .. hash
local current = redis.call('HGET', key, 'status')
if (not current) or TERMINAL[current] then return {} end
-- appliedAt: the coordinator's clock (finishedAt may come from a worker's)
local args = { 'status', status, 'finishedAt', now, 'appliedAt', now }
for k, v in pairs(fields) do args[#args + 1] = k; args[#args + 1] = v end
redis.call('HSET', key, unpack(args))
local finishedRuns, released, depFailed = {}, {}, {}
terminate(prefix, hash, status, finishedRuns)
if status == 'succeeded' then
  for _, dep in ipairs(redis.call('SMEMBERS', key .. ':dependents')) do
    local depKey = prefix .. ':drv:' .. dep
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
  local todo = redis.call('SMEMBERS', key .. ':dependents')
  while #todo > 0 do
    local dep = table.remove(todo)
    local depKey = prefix .. ':drv:' .. dep
    local s = redis.call('HGET', depKey, 'status')
    if s == 'waiting' or s == 'queued' then
      redis.call('HSET', depKey, 'status', 'dependency-failed', 'finishedAt', now, 'error', 'input ' .. name .. ' ' .. status)
      terminate(prefix, dep, 'dependency-failed', finishedRuns)
      depFailed[#depFailed + 1] = dep
      for _, next in ipairs(redis.call('SMEMBERS', depKey .. ':dependents')) do todo[#todo + 1] = next end
    end
  end
end
return { released, depFailed, finishedRuns, redis.call('SMEMBERS', key .. ':runs') }
`;

/**
 * Puts an aborted (infrastructure) attempt back in the queue.
 * ARGV: prefix, hash, now, error. Returns 1 if requeued, 0 if the node was not running or queued.
 */
export const REQUEUE = `
local key = ARGV[1] .. ':drv:' .. ARGV[2]
local status = redis.call('HGET', key, 'status')
if status ~= 'running' and status ~= 'queued' then return 0 end
redis.call('HSET', key, 'status', 'queued', 'queuedAt', ARGV[3], 'error', ARGV[4])
redis.call('HDEL', key, 'worker', 'startedAt')
return 1
`;

/**
 * A draining worker gave a running build back: the node is queued again (its
 * BullMQ job, same id, went back to the queue), and the try it started is not
 * counted (MARK_STARTED's increment is undone). Applied only while the node
 * runs on that worker: a late hand-back never touches a build another worker
 * has taken since.
 * ARGV: prefix, hash, worker, now, handedBack JSON {worker, reason, at}.
 * Returns the node's runs if applied, 0 otherwise.
 */
export const HAND_BACK = `
local key = ARGV[1] .. ':drv:' .. ARGV[2]
local status, worker, attempts = unpack(redis.call('HMGET', key, 'status', 'worker', 'attempts'))
if status ~= 'running' or worker ~= ARGV[3] then return 0 end
redis.call('HSET', key, 'status', 'queued', 'queuedAt', ARGV[4], 'handedBack', ARGV[5])
redis.call('HDEL', key, 'worker', 'startedAt')
if tonumber(attempts or '0') > 0 then redis.call('HINCRBY', key, 'attempts', -1) end
return redis.call('SMEMBERS', key .. ':runs')
`;

/**
 * Cancels a run: every pending derivation no other running run needs ends as
 * cancelled; shared ones stay for the runs that still need them.
 * ARGV: prefix, runId, now. Returns a flat list [hash, previousStatus, ...] of
 * the derivations cancelled, or {-1} when the run is not running.
 */
export const CANCEL_RUN = `
local prefix, runId, now = ARGV[1], ARGV[2], ARGV[3]
local runKey = prefix .. ':run:' .. runId
if redis.call('HGET', runKey, 'status') ~= 'running' then return { -1 } end
redis.call('HSET', runKey, 'status', 'cancelled', 'finishedAt', now)
redis.call('SREM', prefix .. ':runs:active', runId)
local out = {}
for _, hash in ipairs(redis.call('SMEMBERS', runKey .. ':drvs')) do
  local key = prefix .. ':drv:' .. hash
  local status = redis.call('HGET', key, 'status')
  if status == 'waiting' or status == 'queued' or status == 'running' then
    local neededElsewhere = false
    for _, other in ipairs(redis.call('SMEMBERS', key .. ':runs')) do
      if other ~= runId and redis.call('HGET', prefix .. ':run:' .. other, 'status') == 'running' then neededElsewhere = true end
    end
    if not neededElsewhere then
      redis.call('HSET', key, 'status', 'cancelled', 'finishedAt', now, 'error', 'run ' .. runId .. ' cancelled')
      out[#out + 1] = hash
      out[#out + 1] = status
    end
  end
end
return out
`;
