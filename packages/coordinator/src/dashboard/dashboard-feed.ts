import type { DashboardSnapshot, Logger } from '@nixfarm/shared';

export interface DashboardFeedOptions {
  collect(): Promise<DashboardSnapshot>;
  logger: Logger;
  /** how often a snapshot is taken while someone watches (default 1000 ms) */
  intervalMs?: number;
}

export type SnapshotListener = (snapshot: DashboardSnapshot) => void;

/**
 * One snapshot a tick for every open dashboard: however many browsers
 * watch, the farm is read once an interval, and not at all when none does.
 * A new watcher gets the last snapshot at once so its page is never empty.
 * A read that takes long (runs of 100,000 derivations are counted per
 * status) stretches the interval to four times its duration, so watching
 * never takes more than a fifth of Redis's time from the builds.
 */
export class DashboardFeed {
  private readonly listeners = new Set<SnapshotListener>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** bumped at each start, so a read still in flight from before a stop does not start a second loop */
  private generation = 0;
  private last: DashboardSnapshot | undefined;

  constructor(private readonly options: DashboardFeedOptions) {}

  subscribe(listener: SnapshotListener): () => void {
    this.listeners.add(listener);
    if (this.last !== undefined) listener(this.last);
    if (!this.running) {
      this.running = true;
      void this.tick(++this.generation);
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stop();
    };
  }

  /** The current snapshot, read now (GET /api/dashboard). */
  snapshot(): Promise<DashboardSnapshot> {
    return this.options.collect();
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.running = false;
    this.last = undefined;
  }

  private async tick(generation: number): Promise<void> {
    const started = performance.now();
    try {
      const snapshot = await this.options.collect();
      if (this.listeners.size === 0) return;
      this.last = snapshot;
      for (const listener of this.listeners) listener(snapshot);
    } catch (error) {
      this.options.logger.warn({ err: error }, 'dashboard snapshot failed; trying again next tick');
    } finally {
      if (this.running && generation === this.generation && this.listeners.size > 0) {
        const took = performance.now() - started;
        this.timer = setTimeout(() => void this.tick(generation), Math.max(this.options.intervalMs ?? 1000, 4 * took));
      }
    }
  }
}
