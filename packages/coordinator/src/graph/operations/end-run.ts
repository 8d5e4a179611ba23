import { redisKeys, type RunStatus } from '@nixfarm/shared';
import type { GraphOperation } from './graph-operation.js';

export interface EndRunCall {
  runId: string;
  status: Exclude<RunStatus, 'running' | 'cancelled'>;
  now: number;
  error?: string;
}

export type EndRunReply = { kind: 'ended' } | { kind: 'not-running' };

/** Records the end of a run whose derivations have all ended (cancel-run ends a cancelled one). */
export const endRunOperation: GraphOperation<EndRunCall, EndRunReply> = {
  name: 'nixfarmEndRun',
  numberOfKeys: 2,
  lua: `
--[[
  Ends a running run.
  KEYS[1] the run record (nixfarm:run:<id>)
  KEYS[2] the set of active runs (nixfarm:runs:active)
  ARGV[1] run id
  ARGV[2] status: 'succeeded' or 'failed'
  ARGV[3] now (ms)
  ARGV[4] error ('' if none)
  Returns {kind='ok'}; {kind='not-running'} when the run had ended (or was cancelled) meanwhile.
]]
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return cjson.encode({ kind = 'not-running' }) end
if ARGV[2] == 'succeeded' then
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'finishedAt', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finishedAt', ARGV[3])
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
redis.call('SREM', KEYS[2], ARGV[1])
return cjson.encode({ kind = 'ok' })
`,
  args: (c) => [redisKeys.run(c.runId), redisKeys.activeRuns, c.runId, c.status, String(c.now), c.error ?? ''],
  decode: (reply) => (reply.kind === 'ok' ? { kind: 'ended' } : { kind: 'not-running' }),
};
