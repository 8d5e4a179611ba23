import { redisKeys } from '@nixfarm/shared';
import type { GraphOperation } from './graph-operation.js';

export interface OpenRunCall {
  runId: string;
  now: number;
  /** the SubmitRunRequest */
  request: unknown;
  results: unknown[];
  /** derivations planned so far */
  total: number;
  priority: number;
}

/**
 * Records a new run, open: its `remaining` holds a sentinel of one (and
 * `open` is set) until close-run, so a run whose early derivations finish
 * fast is not ended before all are registered, or while evaluation streams in.
 */
export const openRunOperation: GraphOperation<OpenRunCall, { kind: 'opened' }> = {
  name: 'nixfarmOpenRun',
  numberOfKeys: 3,
  lua: `
--[[
  Records a run, running and open.
  KEYS[1] the run record (nixfarm:run:<id>)
  KEYS[2] runs by creation time (nixfarm:runs)
  KEYS[3] the set of active runs (nixfarm:runs:active)
  ARGV[1] run id
  ARGV[2] now (ms)
  ARGV[3] request JSON
  ARGV[4] results JSON
  ARGV[5] total
  ARGV[6] priority
  Returns {kind='ok'}.
]]
redis.call('HSET', KEYS[1], 'status', 'running', 'createdAt', ARGV[2], 'request', ARGV[3], 'results', ARGV[4],
  'total', ARGV[5], 'remaining', 1, 'failed', 0, 'priority', ARGV[6], 'open', '1')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return cjson.encode({ kind = 'ok' })
`,
  args: (c) => [
    redisKeys.run(c.runId),
    redisKeys.runs,
    redisKeys.activeRuns,
    c.runId,
    String(c.now),
    JSON.stringify(c.request),
    JSON.stringify(c.results),
    String(c.total),
    String(c.priority),
  ],
  decode: () => ({ kind: 'opened' }),
};
