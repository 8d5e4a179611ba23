/**
 * Lua: terminate(the node's runs key, status, finishedRuns) marks a node's end in each of its runs that is running (counts a
 * failure, takes one off `remaining`) and collects the runs left with
 * nothing. Keys built from data: the node's runs set and each run's record.
 */
export const TERMINATE_LUA = `
local function terminate(nodeRunsKey, status, finishedRuns)
  for _, run in ipairs(redis.call('SMEMBERS', nodeRunsKey)) do
    local runRecord = runKey(run)
    if redis.call('HGET', runRecord, 'status') == 'running' then
      if status ~= 'succeeded' then redis.call('HINCRBY', runRecord, 'failed', 1) end
      local left = redis.call('HINCRBY', runRecord, 'remaining', -1)
      if left <= 0 then finishedRuns[#finishedRuns + 1] = run end
    end
  end
end`;
