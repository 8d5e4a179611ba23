import type { FarmStatus, HistorySample, Logger } from '@nixfarm/shared';
import { counterDeltas } from './counter-deltas.js';
import type { FarmHistoryStore } from './farm-history-store.js';

export interface FarmHistorySamplerOptions {
  /** the snapshot GET /api/status, /metrics and the dashboard read: the history shows the same numbers */
  status: { collect(): Promise<FarmStatus> };
  /** builds ended so far, by status (FarmMetrics's counter; it restarts at 0 with the process) */
  finishedTotals(): Promise<ReadonlyMap<string, number>>;
  store: Pick<FarmHistoryStore, 'append'>;
  intervalSeconds: number;
  logger: Logger;
}

/**
 * Takes one sample of the farm every interval and appends it to the
 * history: the queues per system, workers up, the scaling signal, and the
 * builds ended since the sample before. Samples never overlap: a slow one
 * makes the next wait. A failed one is logged and its builds are counted
 * in the next.
 */
export class FarmHistorySampler {
  private timer: NodeJS.Timeout | undefined;
  private previous: ReadonlyMap<string, number> = new Map();
  private sampling: Promise<void> | undefined;

  constructor(private readonly options: FarmHistorySamplerOptions) {}

  /** Takes the first sample now, then one every interval. */
  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.tick(), this.options.intervalSeconds * 1000);
    this.timer.unref();
    this.tick();
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.sampling;
  }

  /** One sample, appended; answers it (tests). */
  async sample(): Promise<HistorySample> {
    const [status, totals] = await Promise.all([this.options.status.collect(), this.options.finishedTotals()]);
    const sample = historySample(status, counterDeltas(this.previous, totals));
    await this.options.store.append(sample);
    this.previous = totals;
    return sample;
  }

  private tick(): void {
    if (this.sampling !== undefined) return;
    this.sampling = this.sample()
      .then(() => undefined)
      .catch((error: unknown) => this.options.logger.warn({ err: error }, 'history sample failed; its builds count in the next one'))
      .finally(() => {
        this.sampling = undefined;
      });
  }
}

/** The farm status boiled down to what the history keeps, per system. */
export function historySample(status: FarmStatus, finished: Record<string, number>): HistorySample {
  const systems = new Map<string, HistorySample['systems'][number]>();
  const entry = (system: string) => {
    let e = systems.get(system);
    if (e === undefined) systems.set(system, (e = { system, waiting: 0, running: 0, workersUp: 0, workersNeeded: 0 }));
    return e;
  };
  for (const q of status.queues) {
    const e = entry(q.system);
    e.waiting += q.waiting;
    e.running += q.running;
  }
  for (const w of status.workers) if (w.up) for (const s of w.systems) entry(s).workersUp += 1;
  for (const s of status.scaling) entry(s.system).workersNeeded = s.workersNeeded;
  return {
    at: status.at,
    systems: [...systems.values()].sort((a, b) => a.system.localeCompare(b.system)),
    workersUp: status.workers.filter((w) => w.up).length,
    workersRegistered: status.workers.length,
    finished,
  };
}
