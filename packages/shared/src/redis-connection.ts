import { Redis, ReplyError, type RedisOptions } from 'ioredis';
import { NixfarmError } from './errors.js';
import type { Logger } from './logger.js';
import { loadRedisTls, type RedisTlsFiles } from './redis-tls.js';
import { diagnoseRedisTlsFailure } from './redis-tls-failure.js';
import { diagnoseSentinelTlsFailure } from './redis-sentinel-tls.js';
import {
  SentinelMasterUnknownError,
  describeSentinelFailure,
  isSentinelUrl,
  masterUnknownToAll,
  newSentinelClient,
  parseSentinelUrl,
  redactSentinelUrl,
} from './redis-sentinel.js';

/** What a caller may add to the wait for Redis at start: a way to stop it, and where to say what is going on. */
export interface RedisWaitHooks {
  /** aborting stops the wait: connectRedis rejects with RedisWaitAbortedError */
  signal?: AbortSignal;
  /** messages for a person watching (Redis unreachable, then connected); the CLI prints them on stderr */
  onNotice?: (message: string) => void;
}

export interface ConnectRedisOptions extends RedisWaitHooks {
  url: string;
  logger: Logger;
  /** the flag or setting that gave the URL, named in the message (default --redis) */
  setting?: string;
  /** first pause between attempts (default 1 s); it doubles up to maxRetryMs */
  firstRetryMs?: number;
  /** longest pause between attempts (default 5 s) */
  maxRetryMs?: number;
  /** options for the connection once it is up (retryStrategy: how it reconnects after a later loss) */
  redisOptions?: RedisOptions;
  /** the CA and client certificate for a rediss:// or rediss+sentinel:// URL (read once, here); given with a redis:// URL they are an error */
  tls?: RedisTlsFiles;
}

/** The wait for Redis was stopped (a signal, a stop at start): nothing was started, nothing is wrong. */
export class RedisWaitAbortedError extends NixfarmError {
  constructor(url: string) {
    super('redis-wait-aborted', `stopped while waiting for Redis at ${url}; nothing was started`, { retryable: false });
  }
}

/** Redis answered but will not let us in (password, ACL): retrying cannot fix that. */
export class RedisRefusedError extends NixfarmError {
  constructor(url: string, reply: string, setting: string) {
    super(
      'redis-refused',
      `Redis at ${url} refused the connection: ${reply}; check the user and password in the URL (${setting}, like redis://:PASSWORD@host:6379)`,
      {
        retryable: false,
      },
    );
  }
}

/** ioredis's own reconnect rule, used after start: quick retries, capped at 2 s. */
const RECONNECT_AFTER_START = (times: number): number => Math.min(times * 50, 2000);

/**
 * Connects to Redis, waiting as long as it takes: a farm's parts start in any
 * order (after a reboot Redis may come up last). The first failure is said
 * once, clearly, with what to check; later attempts back off (capped) and log
 * only at debug. Refused credentials end the wait at once. The returned client
 * reconnects by itself after later losses, as ioredis does.
 */
export async function connectRedis(options: ConnectRedisOptions): Promise<Redis> {
  const { logger, signal } = options;
  const shownUrl = redactRedisUrl(options.url);
  const setting = options.setting ?? '--redis';
  const firstRetryMs = options.firstRetryMs ?? 1000;
  const maxRetryMs = Math.max(firstRetryMs, options.maxRetryMs ?? 5000);
  const started = Date.now();
  const sentinel = isSentinelUrl(options.url) ? parseSentinelUrl(options.url) : undefined;
  let delay = firstRetryMs;
  let saidReason: string | undefined;
  const tls = await loadRedisTls(options.url, shownUrl, options.tls ?? {});
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw new RedisWaitAbortedError(shownUrl);
    // No reconnects of its own while we wait: each attempt is one try, so the back-off and the messages are ours.
    const once: RedisOptions = {
      ...options.redisOptions,
      ...(tls === undefined ? {} : { tls: tls.options }),
      lazyConnect: true,
      retryStrategy: () => null,
    };
    const redis = sentinel === undefined ? new Redis(options.url, once) : newSentinelClient(sentinel, { ...once, sentinelRetryStrategy: () => null });
    let lastError: Error | undefined;
    const onError = (error: Error): void => {
      lastError = error;
    };
    redis.on('error', onError);
    const sentinelErrors: Error[] = [];
    redis.on('sentinelError', (error: Error) => sentinelErrors.push(error));
    const onAbort = (): void => redis.disconnect();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await redis.connect();
      redis.off('error', onError);
      logLaterRedisErrors(redis, logger, shownUrl);
      redis.options.retryStrategy = options.redisOptions?.retryStrategy ?? RECONNECT_AFTER_START;
      // After start, a failover may leave no sentinel answering for a while: keep asking them, as ioredis does by default.
      if (sentinel !== undefined) redis.options.sentinelRetryStrategy = (times) => Math.min(times * 10, 1000);
      if (saidReason !== undefined) {
        const seconds = Math.round((Date.now() - started) / 1000);
        logger.info({ redis: shownUrl, attempts: attempt, waitedSeconds: seconds }, 'connected to Redis');
        options.onNotice?.(`connected to Redis at ${shownUrl} after ${seconds} s`);
      }
      return redis;
    } catch (error) {
      redis.off('error', onError);
      redis.disconnect();
      if (signal?.aborted) throw new RedisWaitAbortedError(shownUrl);
      const cause = lastError ?? (error as Error);
      if (cause instanceof ReplyError) throw new RedisRefusedError(shownUrl, cause.message, setting);
      // A TLS setting that cannot work (wrong scheme, CA, certificate) is said once: retrying cannot fix it.
      const tlsFailure =
        sentinel === undefined
          ? await diagnoseRedisTlsFailure(cause, { url: options.url, shownUrl, tls, setting })
          : await diagnoseSentinelTlsFailure(sentinel, { shownUrl, tls, setting });
      if (tlsFailure !== undefined) throw tlsFailure;
      if (sentinel !== undefined && masterUnknownToAll(sentinel, sentinelErrors)) throw new SentinelMasterUnknownError(sentinel, setting);
      const reason =
        sentinel === undefined ? ((cause as NodeJS.ErrnoException).code ?? cause.message) : describeSentinelFailure(sentinel, cause, sentinelErrors);
      if (reason !== saidReason) {
        saidReason = reason;
        const message =
          `cannot reach Redis at ${shownUrl} (${reason}); retrying every ${formatSeconds(firstRetryMs)}` +
          `${maxRetryMs > firstRetryMs ? `, backing off to every ${formatSeconds(maxRetryMs)}` : ''}` +
          ` — ${sentinel === undefined ? 'is redis-server running there?' : 'are the sentinels running, and do they see a primary?'} (${setting})`;
        logger.warn({ redis: shownUrl, reason, attempt }, message);
        options.onNotice?.(message);
      } else {
        logger.debug({ redis: shownUrl, reason, attempt, nextInMs: delay }, 'Redis still unreachable');
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    await pause(delay, signal);
    delay = Math.min(maxRetryMs, delay * 2);
  }
}

/**
 * After start, ioredis reconnects by itself; without a listener each failed
 * attempt would print "Unhandled error event" on the console every 2 s. Say
 * each cause once in the log (an expired certificate, a refused connection),
 * then quietly until the connection is back.
 */
function logLaterRedisErrors(redis: Redis, logger: Logger, shownUrl: string): void {
  let said: string | undefined;
  redis.on('error', (error: Error) => {
    const reason = (error as NodeJS.ErrnoException).code ?? error.message;
    if (reason === said) return logger.debug({ redis: shownUrl, reason }, 'Redis still unreachable');
    said = reason;
    logger.warn({ redis: shownUrl, reason, err: error }, `lost Redis at ${shownUrl} (${error.message}); reconnecting`);
  });
  redis.on('ready', () => {
    if (said === undefined) return;
    said = undefined;
    logger.info({ redis: shownUrl }, 'Redis is back');
  });
}

/** The URL without its password, for messages and logs. */
export function redactRedisUrl(url: string): string {
  if (isSentinelUrl(url)) return redactSentinelUrl(url);
  try {
    const parsed = new URL(url);
    if (parsed.password === '') return url;
    parsed.password = '***';
    return parsed.toString();
  } catch {
    return url;
  }
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** Sleeps, ending early (not throwing) when the signal is aborted: the loop's check throws. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
