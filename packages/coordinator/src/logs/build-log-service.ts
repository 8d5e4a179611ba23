import type { Redis } from 'ioredis';
import {
  hashPart,
  isTerminal,
  logAttemptKey,
  redisKeys,
  type BuildFinishedEvent,
  type BuildStartedEvent,
  type BuildStatus,
  type Logger,
  type WorkerOutcome,
} from '@nixfarm/shared';
import { NodeReader } from '../graph/node-reader.js';
import { runningAttemptKey } from '../graph/derivation-node.js';
import type { BuildLogStore } from './build-log-store.js';
import { LogRenderer, type LogAttemptInfo } from './log-renderer.js';
import type { SignedLogEntries, StreamEntry } from './signed-log-entries.js';

export interface BuildLogServiceOptions {
  redis: Redis;
  store: BuildLogStore;
  logger: Logger;
  /** which entries are workers' signed batches: only those are shown and stored */
  entries: SignedLogEntries;
}

/** What a log read found, besides its text. */
export interface BuildLogInfo {
  drvPath: string;
  /** the derivation's status in the graph */
  status: string;
  /** where the text came from: the live stream in Redis, the stored file (empty for a build that printed nothing), or nowhere (not built yet, or never built here) */
  source: 'stream' | 'file' | 'none';
  /** still being written by a running build */
  live: boolean;
  /** every attempt reported its end (false: a worker stopped reporting mid-build; what it streamed is kept) */
  complete: boolean;
  attempts: LogAttemptInfo[];
  /** the stored file in Nix's layout (`nix-store --read-log` reads it), when written */
  file?: string;
}

function fieldsOf(flat: readonly string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  return fields;
}

/**
 * Build logs on the coordinator: reads the live stream workers write, stores
 * each derivation's log as a file in Nix's layout when a build ends (and when
 * a re-run starts, so a dead worker's part is on disk), and follows a
 * running build.
 */
export class BuildLogService {
  private readonly nodes: NodeReader;

  constructor(private readonly options: BuildLogServiceOptions) {
    this.nodes = new NodeReader(options.redis);
  }

  /** The graph's status and running attempt of a derivation; undefined when unknown. */
  private async node(hash: string): Promise<{ status: BuildStatus; liveKey: string | undefined } | undefined> {
    const node = await this.nodes.read(hash, ['status', 'runningAttempt']);
    if (node?.status === undefined) return undefined;
    // A start always records its attempt (worker, try, job), in the form of logAttemptKey.
    const liveKey = node.status === 'running' && node.runningAttempt !== undefined ? runningAttemptKey(node.runningAttempt) : undefined;
    return { status: node.status, liveKey };
  }

  /** The live key as the renderer knows it: the running attempt's, when it is the latest attempt that logged. */
  private static liveKeyIn(liveKey: string | undefined, attempts: readonly LogAttemptInfo[]): string | undefined {
    const last = attempts.at(-1);
    if (last === undefined) return undefined;
    const key = logAttemptKey(last.worker, last.attempt, last.jobId);
    return liveKey === key ? key : undefined;
  }

  /** The whole log so far; undefined when the derivation is unknown to the graph. */
  async read(drvPath: string): Promise<{ text: string; info: BuildLogInfo } | undefined> {
    const hash = hashPart(drvPath);
    const node = await this.node(hash);
    if (node === undefined) return undefined;
    const file = this.options.store.pathFor(drvPath);
    const key = redisKeys.buildLog(hash);
    const entries = await this.options.entries.filter(key, (await this.options.redis.xrange(key, '-', '+')) as StreamEntry[]);
    if (entries.length > 0) {
      const renderer = new LogRenderer();
      let text = entries.map(([, flat]) => renderer.consume(fieldsOf(flat))).join('');
      const liveKey = BuildLogService.liveKeyIn(node.liveKey, renderer.attemptList);
      text += renderer.finish(liveKey);
      let stored = await this.options.store.read(drvPath);
      // A build that ended without a last report (its worker died, then the run was cancelled or gave up) is stored when first read.
      if (isTerminal(node.status) && stored !== text) {
        await this.options.store.write(drvPath, text).then(
          () => (stored = text),
          (error: unknown) => this.options.logger.warn({ err: error, drvPath }, 'storing the build log failed'),
        );
      }
      const info: BuildLogInfo = {
        drvPath,
        status: node.status,
        source: 'stream',
        live: liveKey !== undefined,
        complete: renderer.complete(liveKey),
        attempts: renderer.attemptList,
        ...(stored === undefined ? {} : { file }),
      };
      return { text, info };
    }
    const stored = await this.options.store.read(drvPath);
    if (stored !== undefined) {
      const complete = !/^nixfarm: log incomplete: /m.test(stored);
      return { text: stored, info: { drvPath, status: node.status, source: 'file', live: false, complete, attempts: [], file } };
    }
    return { text: '', info: { drvPath, status: node.status, source: 'none', live: node.status === 'running', complete: true, attempts: [] } };
  }

  /**
   * The log as it is written: what is there, then each batch as it arrives,
   * until the derivation ends (terminal in the graph and nothing more to
   * read) or `signal` aborts. Reads on its own connection (XREAD blocks).
   */
  async follow(drvPath: string, write: (text: string) => void, signal: AbortSignal, pollMs = 1000): Promise<void> {
    const hash = hashPart(drvPath);
    const key = redisKeys.buildLog(hash);
    const connection = this.options.redis.duplicate();
    const abort = (): void => connection.disconnect();
    signal.addEventListener('abort', abort, { once: true });
    try {
      const renderer = new LogRenderer();
      let cursor = '0';
      let sawStream = false;
      const sessions = new Map<string, number>();
      while (!signal.aborted) {
        const reply = (await connection.xread('COUNT', 1000, 'BLOCK', pollMs, 'STREAMS', key, cursor)) as Array<[string, StreamEntry[]]> | null;
        const read = reply?.[0]?.[1] ?? [];
        cursor = read.at(-1)?.[0] ?? cursor;
        const entries = await this.options.entries.filter(key, read, { sessions });
        for (const [, flat] of entries) {
          sawStream = true;
          const text = renderer.consume(fieldsOf(flat));
          if (text.length > 0) write(text);
        }
        if (read.length > 0) continue;
        const node = await this.node(hash);
        if (node === undefined || isTerminal(node.status)) {
          if (!sawStream) {
            // Nothing streamed while following (the stream expired): the stored log is all there is.
            const stored = await this.options.store.read(drvPath);
            if (stored !== undefined) write(stored);
          } else {
            write(renderer.finish());
          }
          return;
        }
      }
    } catch (error) {
      if (!signal.aborted) throw error;
    } finally {
      signal.removeEventListener('abort', abort);
      connection.disconnect();
    }
  }

  /**
   * Stores the logs of builds that reported their end, and of re-runs
   * starting (the earlier attempt's part, marked incomplete when its worker
   * vanished). The file holds every attempt in order: a re-run's log follows
   * the lost one's. A build that printed nothing gets an empty file, as Nix
   * keeps one: "printed nothing" and "no log" are different answers.
   * Failures are logged, never thrown: a log must not hold up the graph.
   */
  async archive(events: ReadonlyArray<BuildStartedEvent | BuildFinishedEvent>): Promise<void> {
    const drvPaths = new Set<string>();
    const silent = new Set<string>();
    for (const event of events) {
      if (event.type === 'started') {
        if (event.attempt > 1) drvPaths.add(event.drvPath);
      } else if (event.logStreamed === true) {
        drvPaths.add(event.drvPath);
        silent.delete(event.drvPath);
      } else if (builderAnswered(event.outcome)) {
        drvPaths.add(event.drvPath);
        silent.add(event.drvPath);
      }
    }
    if (drvPaths.size === 0) return;
    const { redis, store, logger } = this.options;
    const pipeline = redis.pipeline();
    for (const drvPath of drvPaths) pipeline.xrange(redisKeys.buildLog(hashPart(drvPath)), '-', '+');
    const replies = (await pipeline.exec()) ?? [];
    await Promise.all(
      [...drvPaths].map(async (drvPath, i) => {
        const key = redisKeys.buildLog(hashPart(drvPath));
        const entries = await this.options.entries.filter(key, (replies[i]?.[1] ?? []) as StreamEntry[], { report: true });
        // No entries after a streamed build: its lines were lost on the way (logged by the worker), which is not an empty log.
        if (entries.length === 0 && !silent.has(drvPath)) return;
        // A silent build after earlier attempts that printed: their lines are its derivation's log.
        const renderer = new LogRenderer();
        const text = entries.map(([, flat]) => renderer.consume(fieldsOf(flat))).join('') + renderer.finish();
        try {
          const file = await store.write(drvPath, text);
          logger.debug({ drvPath, file, bytes: text.length }, text.length === 0 ? 'empty build log stored (the build printed nothing)' : 'build log stored');
        } catch (error) {
          logger.warn({ err: error, drvPath }, 'storing the build log failed; it stays readable from Redis until the stream expires');
        }
      }),
    );
  }
}

/**
 * Whether the builder itself gave the verdict, so a report without streamed
 * lines means it printed nothing. An aborted attempt may never have started
 * the builder, and a cancelled one was cut off: no empty log is claimed for
 * them. Exhaustive, so a new outcome is decided here.
 */
function builderAnswered(outcome: WorkerOutcome): boolean {
  switch (outcome) {
    case 'succeeded':
    case 'failed':
    case 'timed-out':
    case 'log-limit-exceeded':
      return true;
    case 'aborted':
    case 'cancelled':
      return false;
  }
}
