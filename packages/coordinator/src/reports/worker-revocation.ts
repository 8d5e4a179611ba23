import { watch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import type { Redis } from 'ioredis';
import { redisKeys, type Logger } from '@nixfarm/shared';
import type { AuthorizedKeys } from '../store-endpoint/authorized-keys.js';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { BuildDispatcher } from '../dispatch/build-dispatcher.js';
import type { RunEvents } from '../runs/run-events.js';

export interface WorkerRevocationOptions {
  redis: Pick<Redis, 'hgetall' | 'hdel' | 'publish' | 'smembers'>;
  keys: Pick<AuthorizedKeys, 'keys' | 'path' | 'unusable'>;
  graph: Pick<DerivationGraph, 'runningInRunOn' | 'requeue' | 'runsOf'>;
  dispatcher: Pick<BuildDispatcher, 'dispatch'>;
  events: Pick<RunEvents, 'emit'>;
  logger: Logger;
  /** told the fingerprints of revoked keys (the store endpoint drops their connections) */
  onRevoked?: (fingerprints: ReadonlySet<string>) => void;
  /** how often authorized_keys is looked at besides the file watch (one stat); default 1 s */
  pollMs?: number;
}

/**
 * Notices keys removed from authorized_keys (`nixfarm authorize --revoke`, or
 * an edit by hand) while the coordinator runs, and at its start for keys
 * removed while it was down: the workers bound to such a key (report-gate.ts)
 * lose their binding, are told on redisKeys.revokedKeys (an honest worker
 * stops taking builds), and their running builds are queued again at once for
 * another worker, the try not counted, as a hand-back would. Their reports
 * already stop counting at the next batch: the gate re-reads the keys.
 */
export class WorkerRevocation {
  private known: Set<string> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private watcher: FSWatcher | undefined;
  private checking: Promise<void> = Promise.resolve();

  constructor(private readonly options: WorkerRevocationOptions) {}

  async start(): Promise<void> {
    this.known = await this.fingerprints();
    // Bindings to keys that are gone: revoked while the coordinator was down.
    const bindings = await this.options.redis.hgetall(redisKeys.workerKeys);
    const gone = new Set(Object.values(bindings).filter((fingerprint) => !this.known!.has(fingerprint)));
    if (gone.size > 0 && !this.options.keys.unusable) await this.revoke(gone);
    this.timer = setInterval(() => this.check(), this.options.pollMs ?? 1000);
    this.timer.unref();
    try {
      // The directory, not the file: an edit that replaces the file (rename) would end a watch on the file.
      this.watcher = watch(dirname(this.options.keys.path), { persistent: false }, () => this.check());
      this.watcher.on('error', () => this.watcher?.close());
    } catch (error) {
      this.options.logger.debug({ err: error }, 'cannot watch the state dir; authorized_keys is polled');
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.watcher?.close();
  }

  /** Settles once every change seen so far was handled. */
  check(): Promise<void> {
    this.checking = this.checking.then(async () => {
      try {
        const now = await this.fingerprints();
        // A file refused for its mode (logged by AuthorizedKeys) revokes nobody: it is a mistake to mend, not an intent.
        if (this.options.keys.unusable) return;
        const removed = new Set([...(this.known ?? [])].filter((fingerprint) => !now.has(fingerprint)));
        this.known = now;
        if (removed.size > 0) await this.revoke(removed);
      } catch (error) {
        this.options.logger.warn({ err: error }, 'checking authorized_keys for revoked keys failed; trying again');
      }
    });
    return this.checking;
  }

  private async fingerprints(): Promise<Set<string>> {
    return new Set((await this.options.keys.keys()).map((k) => k.fingerprint));
  }

  private async revoke(fingerprints: ReadonlySet<string>): Promise<void> {
    const { redis, graph, dispatcher, events, logger } = this.options;
    this.options.onRevoked?.(fingerprints);
    const bindings = await redis.hgetall(redisKeys.workerKeys);
    const workers = Object.entries(bindings).filter(([, fingerprint]) => fingerprints.has(fingerprint));
    for (const fingerprint of fingerprints) await redis.publish(redisKeys.revokedKeys, fingerprint);
    if (workers.length > 0) await redis.hdel(redisKeys.workerKeys, ...workers.map(([worker]) => worker));
    const runIds = await redis.smembers(redisKeys.activeRuns);
    for (const [worker, fingerprint] of workers) {
      const reason = `the key of worker ${worker} (${fingerprint}) was revoked`;
      let requeued = 0;
      for (const runId of runIds) {
        for (const hash of await graph.runningInRunOn(runId, worker)) {
          const ready = await graph.requeue(hash, reason);
          if (ready === undefined) continue;
          requeued++;
          await events.emit(await graph.runsOf(hash), { type: 'drv-handed-back', drvPath: ready.job.drvPath, worker, reason, at: Date.now() });
          await dispatcher.dispatch([ready]);
        }
      }
      logger.warn({ worker, keyFingerprint: fingerprint, requeued }, 'worker key revoked: its reports no longer count and its running builds are queued again');
    }
    if (workers.length === 0) logger.warn({ keyFingerprints: [...fingerprints] }, 'worker key revoked (no worker had reported with it)');
  }
}
