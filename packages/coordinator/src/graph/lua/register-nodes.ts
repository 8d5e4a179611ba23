/**
 * Lua: registers nodes into a run, shared by register-run and grow-run.
 * Nodes must come inputs first. A node that failed before is a cached failure
 * (unless rebuildFailed); a node another run has pending is joined; a node
 * that succeeded after the planner checked its outputs (checkedAt) counts as
 * built; any other node is (re)written: dependency-failed at once when an
 * input ended unsuccessfully, queued when every input is built, else waiting.
 * Keys built from data: each node's hash, runs and dependents, and its
 * inputs' hashes and dependents.
 * `skipMembers`: leave out nodes the run already holds (a run that grows may
 * be handed a node twice); `added` counts the nodes new to the run.
 */
export const REGISTER_NODES_LUA = `
local function registerNodes(runRecordKey, runDrvsKey, runId, now, rebuildFailed, nodes, checkedAt, skipMembers)
  local ready, cached, depFailed = {}, {}, {}
  local joined, remaining, failed, added = 0, 0, 0, 0
  -- Statuses this call has set: an input registered earlier in the call needs no HGET.
  local known = {}
  local function statusOf(hash)
    local s = known[hash]
    if s == nil then s = redis.call('HGET', drvKey(hash), 'status') end
    return s
  end
  -- The run's members are added in groups, far below Lua's unpack limit.
  local members, seen = {}, {}
  local function flushMembers()
    if #members > 0 then redis.call('SADD', runDrvsKey, unpack(members)) end
    members = {}
  end
  for _, node in ipairs(nodes) do
    local skip = false
    if skipMembers then
      skip = seen[node.hash] or redis.call('SISMEMBER', runDrvsKey, node.hash) == 1
      seen[node.hash] = true
    end
    if not skip then
      added = added + 1
      local key = drvKey(node.hash)
      local status = redis.call('HGET', key, 'status')
      redis.call('SADD', runsKey(node.hash), runId)
      members[#members + 1] = node.hash
      if #members >= 1000 then flushMembers() end
      for _, input in ipairs(node.inputs) do
        redis.call('SADD', dependentsKey(input), node.hash)
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
            brokenInput = redis.call('HGET', drvKey(input), 'path') .. ' ' .. inputStatus
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
  end
  flushMembers()
  if remaining > 0 then redis.call('HINCRBY', runRecordKey, 'remaining', remaining) end
  if failed > 0 then redis.call('HINCRBY', runRecordKey, 'failed', failed) end
  return { kind = 'ok', ready = ready, cachedFailures = cached, dependencyFailed = depFailed, joined = joined, added = added }
end`;
