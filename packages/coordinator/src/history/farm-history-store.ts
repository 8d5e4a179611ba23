import type { Redis } from 'ioredis';
import { HISTORY_MAX_SAMPLES, historySampleSchema, redisKeys, type HistorySample } from '@nixfarm/shared';

export interface FarmHistoryStoreOptions {
  redis: Redis;
  /** seconds between samples: how many fit in 24 h */
  intervalSeconds: number;
}

const DAY_SECONDS = 24 * 60 * 60;

/**
 * The farm's history in one Redis list, oldest first: each sample is one
 * RPUSH with an LTRIM in the same transaction, so the list never holds more
 * than 24 h of samples at the interval, and never more than 8640 (about 3 MB
 * at a few hundred bytes a sample). Kept in Redis, a restarted coordinator
 * still shows the hours before it.
 */
export class FarmHistoryStore {
  readonly maxSamples: number;

  constructor(private readonly options: FarmHistoryStoreOptions) {
    this.maxSamples = Math.min(HISTORY_MAX_SAMPLES, Math.ceil(DAY_SECONDS / options.intervalSeconds));
  }

  async append(sample: HistorySample): Promise<void> {
    const key = redisKeys.farmHistory;
    const results = await this.options.redis.multi().rpush(key, JSON.stringify(sample)).ltrim(key, -this.maxSamples, -1).exec();
    const failed = results?.find(([error]) => error !== null)?.[0];
    if (failed) throw failed;
  }

  /**
   * The samples taken at or after `fromMs`, oldest first. Read from the end
   * in chunks of what the span holds at this interval, going further back
   * only while a whole chunk was in the span (samples of an earlier, shorter
   * interval), so a short range never reads the whole day.
   */
  async since(fromMs: number, spanSeconds: number): Promise<HistorySample[]> {
    const chunk = Math.ceil(spanSeconds / this.options.intervalSeconds) + 16;
    const chunks: HistorySample[][] = [];
    let end = -1;
    for (;;) {
      const raw = await this.options.redis.lrange(redisKeys.farmHistory, end - chunk + 1, end);
      const samples = raw.flatMap(parseSample);
      chunks.unshift(samples.filter((s) => s.at >= fromMs));
      if (raw.length < chunk || (samples[0]?.at ?? 0) < fromMs) break;
      end -= chunk;
    }
    return chunks.flat();
  }
}

/** A sample another version wrote in another shape is left out rather than breaking the charts. */
function parseSample(raw: string): HistorySample[] {
  try {
    const parsed = historySampleSchema.safeParse(JSON.parse(raw));
    return parsed.success ? [parsed.data] : [];
  } catch {
    return [];
  }
}
