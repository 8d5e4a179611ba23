/**
 * Lua: whether a worker's report that would end or retry a build speaks for
 * an attempt that no longer decides it: its job was replaced by a retry, or
 * another attempt has started since (a worker that lost its lock and the one
 * that re-ran the build report in any order). `reporter` is
 * {worker, job, try} or nil (the coordinator's own decision, or a node
 * started before attempts were recorded: always current). staleReport
 * returns why it is stale, or nil.
 */
export const STALE_REPORT_LUA = `
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
