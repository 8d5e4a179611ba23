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
 */
export class DashboardFeed {
  private readonly listeners = new Set<SnapshotListener>();
  private timer: NodeJS.Timeout | undefined;
  private last: DashboardSnapshot | undefined;
  private collecting = false;

  constructor(private readonly options: DashboardFeedOptions) {}

  subscribe(listener: SnapshotListener): () => void {
    this.listeners.add(listener);
    if (this.last !== undefined) listener(this.last);
    if (this.timer === undefined) {
      this.timer = setInterval(() => void this.tick(), this.options.intervalMs ?? 1000);
      void this.tick();
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
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.last = undefined;
  }

  private async tick(): Promise<void> {
    // A slow read (a busy Redis) must not pile up reads behind it.
    if (this.collecting) return;
    this.collecting = true;
    try {
      const snapshot = await this.options.collect();
      if (this.listeners.size === 0) return;
      this.last = snapshot;
      for (const listener of this.listeners) listener(snapshot);
    } catch (error) {
      this.options.logger.warn({ err: error }, 'dashboard snapshot failed; trying again next tick');
    } finally {
      this.collecting = false;
    }
  }
}
