import type { Redis } from 'ioredis';
import { BUILD_STATUSES, evaluatedAttributeSchema, hashPart, redisKeys, type EvaluatedAttribute, type EvaluationProgress } from '@nixfarm/shared';
import type { Discovery } from '../evaluation/jobset-evaluation.js';
import { attributeOutcomeOf } from './attribute-status.js';
import { evaluationProgressOf } from './evaluation-progress.js';

/** How a jobset run's evaluation ended. */
export type EvaluationEnd = { state: 'done' } | { state: 'cancelled' } | { state: 'failed'; error: string };

/** A derivation status -> the outcome its attributes count as, for the scripts (from attribute-status.ts, so the two agree). */
const LUA_OUTCOMES = `{ ${BUILD_STATUSES.map((s) => `['${s}']='${attributeOutcomeOf(s)}'`).join(', ')} }`;

/**
 * KEYS: the attribute list, the evaluation hash, the run's derivation set, the run's pending-attribute hash.
 * ARGV: the attribute's JSON, its derivation's hash part ('' when it failed to evaluate).
 * An attribute whose derivation the run does not hold had every output valid already: cached, counted at once.
 */
const RECORD = `
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'done', 1)
if ARGV[2] == '' then
  redis.call('HINCRBY', KEYS[2], 'failed', 1)
elseif redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
else
  redis.call('HINCRBY', KEYS[2], 'builds:cached', 1)
end
return 1`;

/**
 * KEYS: the evaluation hash, the pending-attribute hash. ARGV: the prefix of a derivation node's key.
 * Moves the attributes of every derivation that has ended from pending to
 * its outcome's counter, then replies { pending count, evaluation hash field, value, ... }.
 */
const SETTLE = `
local OUTCOME = ${LUA_OUTCOMES}
local pending = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local hash, n = entries[i], tonumber(entries[i + 1])
  local outcome = OUTCOME[redis.call('HGET', ARGV[1] .. hash, 'status')]
  if outcome == nil or outcome == 'pending' then
    pending = pending + n
  else
    redis.call('HINCRBY', KEYS[1], 'builds:' .. outcome, n)
    redis.call('HDEL', KEYS[2], hash)
  end
end
local reply = { tostring(pending) }
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do reply[#reply + 1] = v end
return reply`;

/** KEYS: the evaluation hash. ARGV: attributes discovered, 1 while discovering. Only while evaluating: an ended evaluation keeps its last word. */
const DISCOVER = `
if redis.call('HGET', KEYS[1], 'state') ~= 'evaluating' then return 0 end
redis.call('HSET', KEYS[1], 'discovered', ARGV[1], 'discovering', ARGV[2])
return 1`;

/**
 * A jobset run's attributes as evaluated, in Redis so that they outlive the
 * coordinator process: a LIST of JSON results in the order they came
 * (redisKeys.runAttributes; offsets page it) and a HASH with the
 * evaluation's progress (redisKeys.runEvaluation): its state, counters kept
 * as attributes are recorded and as listing finds them, and the count of
 * attributes per build outcome. Build outcomes are counted without a scan:
 * an attribute is pending under its derivation (redisKeys.runPendingAttributes)
 * until a read finds that derivation ended, then counted once under its
 * outcome, so a read costs the derivations still building, not the run.
 */
export class RunAttributes {
  constructor(private readonly redis: Redis) {}

  /** `startedAt`: when the evaluation started, which may be before the run opened. */
  async start(runId: string, startedAt: number): Promise<void> {
    await this.redis.hset(redisKeys.runEvaluation(runId), { state: 'evaluating', done: 0, failed: 0, discovered: 0, discovering: 1, startedAt });
  }

  async record(runId: string, attribute: EvaluatedAttribute): Promise<void> {
    const keys = [redisKeys.runAttributes(runId), redisKeys.runEvaluation(runId), redisKeys.runDrvs(runId), redisKeys.runPendingAttributes(runId)];
    const drv = attribute.error === undefined && attribute.drvPath !== undefined ? hashPart(attribute.drvPath) : '';
    await this.redis.eval(RECORD, keys.length, ...keys, JSON.stringify(attribute), drv);
  }

  /** What listing the jobset found so far. */
  async discover(runId: string, discovery: Discovery): Promise<void> {
    await this.redis.eval(DISCOVER, 1, redisKeys.runEvaluation(runId), discovery.discovered, discovery.discovering ? 1 : 0);
  }

  /** Records the end once: a cancellation that came first keeps its word. */
  async end(runId: string, end: EvaluationEnd, now: number): Promise<void> {
    const key = redisKeys.runEvaluation(runId);
    if ((await this.redis.hget(key, 'state')) !== 'evaluating') return;
    await this.redis.hset(key, { state: end.state, endedAt: now, discovering: 0, ...(end.state === 'failed' ? { error: end.error } : {}) });
  }

  /** The evaluation's progress now; undefined for a run that is not a jobset. */
  async progress(runId: string, now = Date.now()): Promise<EvaluationProgress | undefined> {
    const reply = (await this.redis.eval(SETTLE, 2, redisKeys.runEvaluation(runId), redisKeys.runPendingAttributes(runId), redisKeys.drv(''))) as string[];
    const [pending, ...fields] = reply;
    const raw: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) raw[fields[i]!] = fields[i + 1]!;
    return evaluationProgressOf(raw, Number(pending ?? 0), now);
  }

  async count(runId: string): Promise<number> {
    return this.redis.llen(redisKeys.runAttributes(runId));
  }

  /** Attributes [offset, offset + limit) in evaluation order; all of them without a limit. */
  async page(runId: string, offset = 0, limit?: number): Promise<EvaluatedAttribute[]> {
    const raw = await this.redis.lrange(redisKeys.runAttributes(runId), offset, limit === undefined ? -1 : offset + limit - 1);
    return raw.map((entry) => evaluatedAttributeSchema.parse(JSON.parse(entry)));
  }
}
