import { redisKeys } from '@nixfarm/shared';
import { encodeNode, type HandedBack } from '../derivation-node.js';
import { listOf, type GraphOperation } from './graph-operation.js';

export interface HandBackCall {
  hash: string;
  now: string;
  handedBack: HandedBack;
}

export type HandBackReply = { kind: 'handed-back'; runIds: string[] } | { kind: 'not-running-there' };

/**
 * A worker (draining, or whose Nix cannot build) gave a running build back:
 * the node is queued again (its BullMQ job, same id, went back to the queue),
 * and the try it started is not counted (mark-started's increment is undone).
 * Applied only while the node runs on that worker: a late hand-back never
 * touches a build another worker has taken since.
 */
export const handBackOperation: GraphOperation<HandBackCall, HandBackReply> = {
  name: 'nixfarmHandBack',
  numberOfKeys: 2,
  lua: `
--[[
  Queues a node again that its worker gave back.
  KEYS[1] the node (nixfarm:drv:<hash>)
  KEYS[2] the node's runs (nixfarm:drv:<hash>:runs)
  ARGV[1] worker
  ARGV[2] now (ms)
  ARGV[3] handedBack JSON {worker, reason, at}
  Returns {kind='ok', runs} if applied; {kind='not-running-there'} when the node does not run on that worker.
]]
local key = KEYS[1]
local status, worker, attempts = unpack(redis.call('HMGET', key, 'status', 'worker', 'attempts'))
if status ~= 'running' or worker ~= ARGV[1] then return cjson.encode({ kind = 'not-running-there' }) end
redis.call('HSET', key, 'status', 'queued', 'queuedAt', ARGV[2], 'handedBack', ARGV[3])
redis.call('HDEL', key, 'worker', 'startedAt')
if tonumber(attempts or '0') > 0 then redis.call('HINCRBY', key, 'attempts', -1) end
return cjson.encode({ kind = 'ok', runs = redis.call('SMEMBERS', KEYS[2]) })
`,
  args: (c) => [redisKeys.drv(c.hash), redisKeys.drvRuns(c.hash), c.handedBack.worker, c.now, encodeNode({ handedBack: c.handedBack }).handedBack!],
  decode: (reply) => (reply.kind === 'ok' ? { kind: 'handed-back', runIds: listOf<string>(reply.runs) } : { kind: 'not-running-there' }),
};
