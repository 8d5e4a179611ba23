import type { Redis } from 'ioredis';
import {
  LOG_FIELD,
  REPORT_SIGNATURE_FIELD,
  logEntryPayload,
  LOG_STREAM_TTL_AFTER_END_SECONDS,
  LOG_STREAM_TTL_WHILE_OPEN_SECONDS,
  hashPart,
  redisKeys,
  type Logger,
  type ReportSigner,
} from '@nixfarm/shared';

export interface LogStreamerOptions {
  redis: Redis;
  /** signs each batch as the worker's report (shared's signed-report.ts): the coordinator shows and stores only entries that verify */
  signer: ReportSigner;
  logger: Logger;
  drvPath: string;
  worker: string;
  jobId: string;
  attempt: number;
  /** flush a batch after this long (ms) */
  flushIntervalMs?: number;
  /** flush a batch once it holds this many bytes */
  flushBytes?: number;
  /** stop streaming past this many bytes (Nix ends the build there too, as log-limit-exceeded) */
  maxBytes?: number;
}

/** A stream holds batches, not lines: this many entries is far more than a 64 MiB log in 64 KiB batches. */
const MAX_STREAM_ENTRIES = 100_000;

/**
 * Streams one build attempt's log to Redis while it builds, in batches
 * (every 100 ms or 64 KiB) so a chatty build costs one Redis call per batch,
 * not per line. A build that prints nothing makes no Redis call at all.
 * Failures to stream are logged and never fail the build.
 */
export class LogStreamer {
  private readonly key: string;
  private batch: string[] = [];
  private batchBytes = 0;
  private totalBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private streamed = false;
  private truncated = false;

  constructor(private readonly options: LogStreamerOptions) {
    this.key = redisKeys.buildLog(hashPart(options.drvPath));
  }

  /** Whether any line reached (or is on its way to) the stream. */
  get hasStreamed(): boolean {
    return this.streamed;
  }

  push(line: string): void {
    const bytes = Buffer.byteLength(line) + 1;
    if (this.totalBytes + bytes > (this.options.maxBytes ?? Number.POSITIVE_INFINITY)) {
      this.truncated = true;
      return;
    }
    this.totalBytes += bytes;
    this.batch.push(line);
    this.batchBytes += bytes;
    this.streamed = true;
    if (this.batchBytes >= (this.options.flushBytes ?? 64 * 1024)) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.options.flushIntervalMs ?? 100);
  }

  /** Sends what is batched; writes stay in order. */
  private flush(): void {
    const lines = this.takeBatch();
    if (lines !== undefined) this.enqueue([{ [LOG_FIELD.lines]: lines }], LOG_STREAM_TTL_WHILE_OPEN_SECONDS);
  }

  private takeBatch(): string | undefined {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.batch.length === 0) return undefined;
    const lines = this.batch.join('\n');
    this.batch = [];
    this.batchBytes = 0;
    return lines;
  }

  /** One round trip for the entries and the key's expiry. */
  private enqueue(entries: ReadonlyArray<Record<string, string>>, ttlSeconds: number): void {
    const { redis, worker, jobId, attempt } = this.options;
    const tag = [LOG_FIELD.worker, worker, LOG_FIELD.jobId, jobId, LOG_FIELD.attempt, String(attempt)];
    this.writing = this.writing.then(async () => {
      try {
        const multi = redis.multi();
        for (const fields of entries) {
          const pairs = [...tag, ...Object.entries(fields).flat()];
          const signature = this.options.signer.sign(this.key, worker, logEntryPayload(pairs));
          multi.xadd(this.key, 'MAXLEN', '~', String(MAX_STREAM_ENTRIES), '*', ...pairs, REPORT_SIGNATURE_FIELD, signature);
        }
        await multi.expire(this.key, ttlSeconds).exec();
      } catch (error) {
        this.options.logger.warn({ err: error, drvPath: this.options.drvPath }, 'streaming build log lines failed; they are missing from the stored log');
      }
    });
  }

  /** Flushes the rest and marks the attempt's end with its outcome, in one round trip; settles once everything is written. Nothing is written for a silent build, unless Nix stopped it for its log size. */
  async end(outcome: string): Promise<void> {
    const lines = this.takeBatch();
    // Nix stops a build whose log passes the limit before the bytes past it reach us, so the cut may not be
    // ours: either way the stored log says why it ends there (even a build stopped before its first line).
    const overLimit = outcome === 'log-limit-exceeded';
    if (this.streamed || overLimit) {
      const entries: Array<Record<string, string>> = [];
      if (lines !== undefined) entries.push({ [LOG_FIELD.lines]: lines });
      if (this.truncated || overLimit) entries.push({ [LOG_FIELD.lines]: this.cutNote(overLimit) });
      entries.push({ [LOG_FIELD.end]: outcome });
      this.streamed = true;
      this.enqueue(entries, LOG_STREAM_TTL_AFTER_END_SECONDS);
    }
    await this.writing;
  }

  private cutNote(overLimit: boolean): string {
    const limit = this.options.maxBytes === undefined ? "the worker's log limit" : `${this.options.maxBytes} bytes (the worker's --max-log-size)`;
    return overLimit ? `nixfarm: log cut: the build logged more than ${limit} and was stopped (log-limit-exceeded)` : `nixfarm: log cut at ${limit}`;
  }
}
