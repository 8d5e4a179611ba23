import type { Redis } from 'ioredis';
import { evaluatedAttributeSchema, redisKeys, type EvaluatedAttribute, type EvaluationProgress } from '@nixfarm/shared';

/** How a jobset run's evaluation ended. */
export type EvaluationEnd = { state: 'done' } | { state: 'cancelled' } | { state: 'failed'; error: string };

/**
 * A jobset run's attributes as evaluated, in Redis so that they outlive the
 * coordinator process: a LIST of JSON results in the order they came
 * (redisKeys.runAttributes; offsets page it) and a HASH with the
 * evaluation's progress (redisKeys.runEvaluation). Build statuses are not
 * stored: they are read from the graph when asked (attribute-status.ts).
 */
export class RunAttributes {
  constructor(private readonly redis: Redis) {}

  async start(runId: string, now: number): Promise<void> {
    await this.redis.hset(redisKeys.runEvaluation(runId), { state: 'evaluating', done: 0, failed: 0, startedAt: now });
  }

  async record(runId: string, attribute: EvaluatedAttribute): Promise<void> {
    await this.redis
      .multi()
      .rpush(redisKeys.runAttributes(runId), JSON.stringify(attribute))
      .hincrby(redisKeys.runEvaluation(runId), 'done', 1)
      .hincrby(redisKeys.runEvaluation(runId), 'failed', attribute.error === undefined ? 0 : 1)
      .exec();
  }

  /** Records the end once: a cancellation that came first keeps its word. */
  async end(runId: string, end: EvaluationEnd, now: number): Promise<void> {
    const key = redisKeys.runEvaluation(runId);
    if ((await this.redis.hget(key, 'state')) !== 'evaluating') return;
    await this.redis.hset(key, { state: end.state, endedAt: now, ...(end.state === 'failed' ? { error: end.error } : {}) });
  }

  /** The evaluation's progress; undefined for a run that is not a jobset. */
  async progress(runId: string): Promise<EvaluationProgress | undefined> {
    const raw = await this.redis.hgetall(redisKeys.runEvaluation(runId));
    if (raw.state === undefined) return undefined;
    return {
      state: raw.state as EvaluationProgress['state'],
      done: Number(raw.done ?? 0),
      failed: Number(raw.failed ?? 0),
      startedAt: Number(raw.startedAt ?? 0),
      ...(raw.endedAt === undefined ? {} : { endedAt: Number(raw.endedAt) }),
      ...(raw.error === undefined ? {} : { error: raw.error }),
    };
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
