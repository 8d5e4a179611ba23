/**
 * Lua scripts that change the build graph atomically, so that a coordinator
 * crash between two steps never leaves a node counted twice or a dependent
 * released before its input is recorded as built.
 *
 * Node hash fields: path name system features queue job status pending
 * attempts worker queuedAt startedAt finishedAt timings error logTail outputs;
 * runningAttempt ('<worker> <try> <BullMQ job id>' of the attempt that runs
 * now), retiredJobs (JSON: job id -> the last try a retry replaced), successes (JSON: every
 * successful build reported), divergentBuild (a build whose outputs differed
 * from the coordinator's copy).
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
 * Whether a worker's report that would end or retry a build speaks for an
 * attempt that no longer decides it: its job was replaced by a retry, or
 * another attempt has started since (a worker that lost its lock and the one
 * that re-ran the build report in any order). `reporter` is
 * {worker, job, try} or nil (the coordinator's own decision, or a node
 * started before attempts were recorded: always current). Returns why it is
 * stale, or nil.
 */
const STALE_REPORT = `
-- A retry replaces a job's tries up to the one that aborted; a later try of the same job id is new
-- (the coordinator's own builder reuses its job id, with the next try number).
local function retiredTry(retired, job, try)
  if not retired then return false end
  local last = cjson.decode(retired)[job]
  return last ~= nil and tonumber(try) <= tonumber(last)
end
local function staleReport(key, reporter)
  if reporter == nil then return nil end
  local f = redis.call('HMGET', key, 'runningAttempt', 'retiredJobs')
  if retiredTry(f[2], reporter.job, reporter.try) then return 'job ' .. reporter.job .. ' try ' .. reporter.try .. ' was replaced by a retry' end
  if f[1] and f[1] ~= reporter.worker .. ' ' .. reporter.try .. ' ' .. reporter.job then
    local w, t, j = string.match(f[1], '^(%S+) (%d+) (.*)$')
    return 'the running attempt is ' .. tostring(w) .. ' job ' .. tostring(j) .. ' try ' .. tostring(t)
  end
  return nil
end`;

/**
 * ARGV: prefix, hash, worker, now, job id, try ('' and '' when the caller does not say)
 * The start of a job's try becomes the running attempt. A start from a job a
 * retry replaced, or of an earlier try of the running job, is stale; the same
 * start applied again (a batch re-read after a crash) is counted once.
 * Returns the node's runs if it is running that attempt, 0 if the report was stale.
 */
export const MARK_STARTED = `
local key = ARGV[1] .. ':drv:' .. ARGV[2]
local worker, now, job, try = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
-- one read for every check: this runs once per build
local f = redis.call('HMGET', key, 'status', 'runningAttempt', 'retiredJobs')
local status = f[1]
if status ~= 'queued' and status ~= 'running' then return 0 end
if job ~= '' then
  if f[3] then
    local last = cjson.decode(f[3])[job]
    if last ~= nil and tonumber(try) <= tonumber(last) then return 0 end
  end
  local attempt = worker .. ' ' .. try .. ' ' .. job
  if status == 'running' and f[2] then
    if f[2] == attempt then return redis.call('SMEMBERS', key .. ':runs') end
    local _, runningTry, runningJob = string.match(f[2], '^(%S+) (%d+) (.*)$')
    if runningJob == job and tonumber(try) < tonumber(runningTry) then return 0 end
  end
  redis.call('HSET', key, 'status', 'running', 'worker', worker, 'startedAt', now, 'runningAttempt', attempt)
  redis.call('HDEL', key, 'unsupported')
else
  redis.call('HSET', key, 'status', 'running', 'worker', worker, 'startedAt', now)
  -- which attempt runs is unknown: every later report counts, as before attempts were recorded
  redis.call('HDEL', key, 'unsupported', 'runningAttempt', 'retiredJobs')
end
redis.call('HINCRBY', key, 'attempts', 1)
return redis.call('SMEMBERS', key .. ':runs')
`;

/** Successful builds remembered per node: far more than any retry policy allows. */
const MAX_SUCCESSES = 20;

/**
 * ARGV: prefix, hash, status (terminal), now, fields JSON {worker, timings, error, logTail, outputs},
 * reporter JSON {worker, job, try} ('' for the coordinator's own decision), divergence ('' if none)
 * A success from any attempt counts (its outputs were checked valid); any
 * other end only from the running attempt. Every successful build is
 * remembered, a late duplicate too, and so is a divergent one.
 * Returns: { released, dependency-failed hashes, finished run ids, the node's runs }, where each
 * released entry is { hash, READY_FIELDS... } (what queueing it needs, read in the same step);
 * an empty table when the node was already terminal (a duplicate report);
 * or { 'stale', why } when the report came from an attempt that no longer decides the build.
 */
export const FINISH_DERIVATION = `
${TERMINAL}
${TERMINATE}
${READY_FIELDS}
${STALE_REPORT}
local prefix, hash, status, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local fields = cjson.decode(ARGV[5])
local reporterJson = ARGV[6]
local key = prefix .. ':drv:' .. hash
local f = redis.call('HMGET', key, 'status', 'successes')
local current = f[1]
if not current then return {} end
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
if ARGV[7] ~= '' then redis.call('HSET', key, 'divergentBuild', ARGV[7]) end
if TERMINAL[current] then return {} end
if status ~= 'succeeded' and reporterJson ~= '' then
  local stale = staleReport(key, cjson.decode(reporterJson))
  if stale then return { 'stale', stale } end
end
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
 * Puts an aborted (infrastructure) attempt back in the queue, under a new
 * job; the reporter's job is retired up to its try, so reports of its other
 * tries (a worker that lost the lock to the one that aborted) are stale.
 * ARGV: prefix, hash, now, error, reporter JSON {worker, job, try} ('' if none).
 * Returns 1 if requeued, 0 if the node was not running or queued, or why the
 * report is stale (a string): then nothing changes.
 */
export const REQUEUE = `
${STALE_REPORT}
local key = ARGV[1] .. ':drv:' .. ARGV[2]
local status = redis.call('HGET', key, 'status')
if status ~= 'running' and status ~= 'queued' then return 0 end
local reporter = nil
if ARGV[5] ~= '' then reporter = cjson.decode(ARGV[5]) end
local stale = staleReport(key, reporter)
if stale then return stale end
if reporter ~= nil then
  local retired = {}
  local field = redis.call('HGET', key, 'retiredJobs')
  if field then retired = cjson.decode(field) end
  local last = retired[reporter.job]
  if last == nil or tonumber(reporter.try) > tonumber(last) then retired[reporter.job] = reporter.try end
  redis.call('HSET', key, 'retiredJobs', cjson.encode(retired))
end
redis.call('HSET', key, 'status', 'queued', 'queuedAt', ARGV[3], 'error', ARGV[4])
redis.call('HDEL', key, 'worker', 'startedAt', 'runningAttempt')
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
