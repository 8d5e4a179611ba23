import type { Redis } from 'ioredis';
import { CHECK_STATES, isCheckEnded, redisKeys, type BuildJob, type CheckState, type CheckView } from '@nixfarm/shared';

/** How many ended checks and mismatches the newest-first lists keep. */
const KEPT = 500;

/**
 * A derivation's latest reproducibility check as the coordinator keeps it:
 * what the API shows, plus what it needs to queue the check again. The one
 * description of the record; stored as JSON in redisKeys.checks.
 */
export interface CheckRecord extends Omit<CheckView, 'diff'> {
  /** the .drv's hash part: the record's key */
  hash: string;
  job: BuildJob;
  /** the BullMQ job of the current try */
  jobId?: string;
  queue?: string;
  /** BullMQ priority within its check queue (the run's priority) */
  priority: number;
  /** set when the difference was shown: the report lives in the coordinator's state directory */
  diff?: Omit<NonNullable<CheckView['diff']>, 'url'>;
}

/** The view of a record, as the API sends it: `diffUrl` says where its report is read. */
export function checkView(record: CheckRecord, diffUrl: (hash: string) => string): CheckView {
  const { hash, job: _job, jobId: _jobId, queue: _queue, priority: _priority, diff, ...view } = record;
  return { ...view, ...(diff === undefined ? {} : { diff: { ...diff, url: diffUrl(hash) } }) };
}

/**
 * The records of checks in Redis: the latest per derivation, the set of
 * checks not ended (what a restarted coordinator picks up), the newest
 * ended ones and mismatches, and counts of ended checks by state.
 */
export class CheckRecords {
  constructor(private readonly redis: Redis) {}

  async get(hash: string): Promise<CheckRecord | undefined> {
    return parse(await this.redis.hget(redisKeys.checks, hash));
  }

  async getMany(hashes: readonly string[]): Promise<Array<CheckRecord | undefined>> {
    if (hashes.length === 0) return [];
    return (await this.redis.hmget(redisKeys.checks, ...hashes)).map(parse);
  }

  /** Writes a check that has not ended, or one whose end is recorded again (its diff added). */
  async put(record: CheckRecord): Promise<void> {
    const multi = this.redis.multi().hset(redisKeys.checks, record.hash, JSON.stringify(record));
    if (isCheckEnded(record.state)) multi.srem(redisKeys.checksActive, record.hash);
    else multi.sadd(redisKeys.checksActive, record.hash);
    await multi.exec();
  }

  /** Writes a check that just ended: counted once, listed among the newest (and the mismatches when it is one). */
  async ended(record: CheckRecord): Promise<void> {
    const at = record.finishedAt ?? Date.now();
    const multi = this.redis
      .multi()
      .hset(redisKeys.checks, record.hash, JSON.stringify(record))
      .srem(redisKeys.checksActive, record.hash)
      .hincrby(redisKeys.checkCounts, record.state, 1)
      .zadd(redisKeys.checksEnded, at, record.hash)
      .zremrangebyrank(redisKeys.checksEnded, 0, -KEPT - 1);
    if (record.state === 'not-reproducible') multi.zadd(redisKeys.checksMismatched, at, record.hash).zremrangebyrank(redisKeys.checksMismatched, 0, -KEPT - 1);
    await multi.exec();
  }

  /** Checked derivations whose hash part starts with `prefix`, or which have `outputPath` among their outputs (a scan of the records). */
  async find(match: { prefix: string } | { outputPath: string }): Promise<CheckRecord[]> {
    const found: CheckRecord[] = [];
    let cursor = '0';
    do {
      const [next, flat] = await this.redis.hscan(redisKeys.checks, cursor, 'MATCH', 'prefix' in match ? `${match.prefix}*` : '*', 'COUNT', 1000);
      cursor = next;
      for (let i = 1; i < flat.length; i += 2) {
        const record = parse(flat[i]);
        if (record === undefined) continue;
        if ('prefix' in match || record.outputs.some((o) => o.path === match.outputPath)) found.push(record);
      }
    } while (cursor !== '0');
    return found;
  }

  async active(): Promise<string[]> {
    return this.redis.smembers(redisKeys.checksActive);
  }

  async addToRun(runId: string, hashes: readonly string[]): Promise<void> {
    if (hashes.length > 0) await this.redis.sadd(redisKeys.runChecks(runId), ...hashes);
  }

  async ofRun(runId: string): Promise<CheckRecord[]> {
    const hashes = (await this.redis.smembers(redisKeys.runChecks(runId))).sort();
    return (await this.getMany(hashes)).filter((r): r is CheckRecord => r !== undefined);
  }

  async newest(limit: number): Promise<CheckRecord[]> {
    return this.listed(redisKeys.checksEnded, limit);
  }

  async newestMismatches(limit: number): Promise<CheckRecord[]> {
    return this.listed(redisKeys.checksMismatched, limit);
  }

  /** Ended checks by state since Redis was new, and the checks not ended by their state now. */
  async counts(): Promise<Record<CheckState, number>> {
    const counts = Object.fromEntries(CHECK_STATES.map((s) => [s, 0])) as Record<CheckState, number>;
    for (const [state, n] of Object.entries(await this.redis.hgetall(redisKeys.checkCounts))) {
      if ((CHECK_STATES as readonly string[]).includes(state)) counts[state as CheckState] = Number(n);
    }
    for (const record of await this.getMany(await this.active())) if (record !== undefined && !isCheckEnded(record.state)) counts[record.state]++;
    return counts;
  }

  private async listed(key: string, limit: number): Promise<CheckRecord[]> {
    const hashes = await this.redis.zrevrange(key, 0, limit - 1);
    return (await this.getMany(hashes)).filter((r): r is CheckRecord => r !== undefined);
  }
}

function parse(raw: string | null | undefined): CheckRecord | undefined {
  if (raw === null || raw === undefined) return undefined;
  try {
    return JSON.parse(raw) as CheckRecord;
  } catch {
    return undefined;
  }
}
