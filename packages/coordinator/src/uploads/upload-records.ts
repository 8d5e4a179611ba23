import type { Redis } from 'ioredis';
import { redisKeys, uploadRecordSchema, type UploadRecord } from '@nixfarm/shared';

/**
 * Each upload's state, in Redis beside its job: one record per (output,
 * cache), shared by every run that asked for it, and per run the set of its
 * uploads, so GET /api/runs/{id}/uploads reads one set and one HMGET.
 */
export class UploadRecords {
  constructor(private readonly redis: Redis) {}

  async get(jobId: string): Promise<UploadRecord | undefined> {
    const raw = await this.redis.hget(redisKeys.uploads, jobId);
    return raw === null ? undefined : uploadRecordSchema.parse(JSON.parse(raw));
  }

  async put(jobId: string, record: UploadRecord, runId?: string): Promise<void> {
    const multi = this.redis.multi().hset(redisKeys.uploads, jobId, JSON.stringify(record));
    if (runId !== undefined) multi.sadd(redisKeys.runUploads(runId), jobId);
    if (record.state === 'retrying' || record.state === 'given-up') multi.zadd(redisKeys.uploadsFailing, Date.now(), jobId);
    else multi.zrem(redisKeys.uploadsFailing, jobId);
    await multi.exec();
  }

  /** Uploads whose last attempt failed, the latest failure first. */
  async failing(limit: number): Promise<UploadRecord[]> {
    const ids = await this.redis.zrevrange(redisKeys.uploadsFailing, 0, limit - 1);
    if (ids.length === 0) return [];
    const raws = await this.redis.hmget(redisKeys.uploads, ...ids);
    return raws.filter((r): r is string => r !== null).map((r) => uploadRecordSchema.parse(JSON.parse(r)));
  }

  async link(runId: string, jobId: string): Promise<void> {
    await this.redis.sadd(redisKeys.runUploads(runId), jobId);
  }

  /** A run's uploads, by output path then cache. */
  async ofRun(runId: string): Promise<UploadRecord[]> {
    const ids = await this.redis.smembers(redisKeys.runUploads(runId));
    if (ids.length === 0) return [];
    const raws = await this.redis.hmget(redisKeys.uploads, ...ids);
    return raws
      .filter((r): r is string => r !== null)
      .map((r) => uploadRecordSchema.parse(JSON.parse(r)))
      .sort((a, b) => a.path.localeCompare(b.path) || a.target.localeCompare(b.target));
  }
}
