import type { Logger } from '@nixfarm/shared';
import type { FetchStall } from './job-fetcher.js';

export interface FetchWatchdogOptions {
  /** a loop that should fetch and has not finished a pass for this long is restarted (ms) */
  stallMs: number;
  /** how often to look (ms; default a quarter of stallMs, at most 5 s) */
  checkEveryMs?: number;
  logger: Logger;
  /** when the fetch loop last finished a pass, or last had no reason to fetch */
  lastFetchAt: () => number;
  /** the loop should be fetching now: a free slot, not paused, not leaving */
  wantsWork: () => boolean;
  /** not leaving */
  active: () => boolean;
  /** how long the fetch connection has not answered a PING (0: it answers); asked while every slot is taken */
  fetchConnectionSilentMs: (timeoutMs: number) => Promise<number>;
  /** jobs waiting per served queue, counted on a connection the fetch does not use */
  waitingJobs: () => Promise<Record<string, number>>;
  restart: (stall: FetchStall) => void;
}

/**
 * BullMQ workers are known to stop fetching silently after some Redis
 * failovers (a connection left on the old primary: BullMQ issues #4378,
 * #3088). The watchdog notices the facts that make a stall visible from
 * outside the loop: free slots, jobs waiting in a queue this worker serves,
 * and no fetch pass finished for stallMs. Then it restarts the loop. An idle
 * worker finishes a pass at least every idle poll, so a healthy loop never
 * looks stalled.
 */
export class FetchWatchdog {
  private timer: NodeJS.Timeout | undefined;
  private checking = false;

  constructor(private readonly options: FetchWatchdogOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.check(), this.every);
    this.timer.unref();
  }

  private get every(): number {
    return this.options.checkEveryMs ?? Math.max(250, Math.min(5000, Math.floor(this.options.stallMs / 4)));
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One look; a look still under way (its count waits on Redis) is not doubled. */
  async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      if (!this.options.active()) return;
      if (!this.options.wantsWork()) {
        // Every slot taken: the builds' lock renewals and completions go through the fetch connection; one that went silent
        // would hold their slots for ever (their reports are in, their BullMQ completion never is).
        const silentMs = await this.options.fetchConnectionSilentMs(this.every);
        if (silentMs >= this.options.stallMs && this.options.active()) {
          this.options.restart({ stalledMs: silentMs, waiting: {}, reason: 'every slot is taken and the fetch connection does not answer' });
        }
        return;
      }
      const stalledMs = Date.now() - this.options.lastFetchAt();
      if (stalledMs < this.options.stallMs) return;
      const waiting = await this.options.waitingJobs();
      // Counted while the loop may have moved on: look again at the facts that could have changed.
      if (Object.keys(waiting).length === 0 || !this.options.wantsWork() || Date.now() - this.options.lastFetchAt() < this.options.stallMs) return;
      this.options.restart({ stalledMs: Date.now() - this.options.lastFetchAt(), waiting, reason: 'free slots and waiting jobs, but no fetch completed' });
    } catch (error) {
      this.options.logger.debug({ err: error }, 'fetch watchdog could not count the waiting jobs');
    } finally {
      this.checking = false;
    }
  }
}
