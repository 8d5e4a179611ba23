import { REGISTER_NODES_LUA } from '../lua/register-nodes.js';
import { decodeRegisterReply, registerArgs, type RegisterCall, type RegisterReply } from './register-run.js';
import type { GraphOperation } from './graph-operation.js';

export type GrowReply = ({ kind: 'grown' } & RegisterReply) | { kind: 'not-running' } | { kind: 'closed' };

/**
 * Registers more derivations into a live run: what a streaming evaluation
 * does as derivations come in. Only an open run grows (see open-run and
 * close-run): a run that drained while open waits for more, and a closed run
 * cannot grow between its last build and its end.
 */
export const growRunOperation: GraphOperation<RegisterCall, GrowReply> = {
  name: 'nixfarmGrowRun',
  numberOfKeys: 2,
  lua: `
--[[
  Registers more derivations into an open, running run; nodes it holds already are left out.
  KEYS[1] the run record (nixfarm:run:<id>)
  KEYS[2] the run's derivations (nixfarm:run:<id>:drvs)
  ARGV[1] run id
  ARGV[2] now (ms)
  ARGV[3] rebuildFailed: '1' or '0'
  ARGV[4] nodes JSON [{hash, inputs: [hash], fields: {node field: value}}], inputs first (inputs may be earlier growths)
  ARGV[5] checkedAt: when the planner saw the outputs invalid ('' if unknown)
  Keys built from data (nixfarm:drv:<hash>...): see registerNodes.
  Returns {kind='ok', ready, cachedFailures, dependencyFailed, joined, added} and adds to the run's total, remaining and failed;
  {kind='not-running'} when the run is not running; {kind='closed'} when it is no longer open.
]]
local f = redis.call('HMGET', KEYS[1], 'status', 'open')
if f[1] ~= 'running' then return cjson.encode({ kind = 'not-running' }) end
if f[2] ~= '1' then return cjson.encode({ kind = 'closed' }) end
${REGISTER_NODES_LUA}
local reply = registerNodes(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3] == '1', cjson.decode(ARGV[4]), tonumber(ARGV[5]), true)
if reply.added > 0 then redis.call('HINCRBY', KEYS[1], 'total', reply.added) end
return cjson.encode(reply)
`,
  args: registerArgs,
  decode: (reply) => {
    if (reply.kind === 'not-running' || reply.kind === 'closed') return { kind: reply.kind };
    return { kind: 'grown', ...decodeRegisterReply('grow-run', reply) };
  },
};
