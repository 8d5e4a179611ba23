import { redisKeys } from '@nixfarm/shared';
import type { GraphOperation } from './graph-operation.js';

export type CloseRunReply = { kind: 'closed'; drained: boolean } | { kind: 'not-open' };

/**
 * Evaluation is complete: the run takes no more derivations, and its sentinel
 * is dropped. `drained`: nothing is left, the caller ends the run (end-run).
 * Closing twice changes nothing the second time.
 */
export const closeRunOperation: GraphOperation<{ runId: string }, CloseRunReply> = {
  name: 'nixfarmCloseRun',
  numberOfKeys: 1,
  lua: `
--[[
  Closes an open run.
  KEYS[1] the run record (nixfarm:run:<id>)
  Returns {kind='ok', drained} (drained: no derivation of the run is left); {kind='not-open'} when it was not open.
]]
if redis.call('HGET', KEYS[1], 'open') ~= '1' then return cjson.encode({ kind = 'not-open' }) end
redis.call('HDEL', KEYS[1], 'open')
local left = redis.call('HINCRBY', KEYS[1], 'remaining', -1)
return cjson.encode({ kind = 'ok', drained = left <= 0 })
`,
  args: (c) => [redisKeys.run(c.runId)],
  decode: (reply) => (reply.kind === 'ok' ? { kind: 'closed', drained: reply.drained === true } : { kind: 'not-open' }),
};
