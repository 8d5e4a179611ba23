import { Counter, Gauge, type Registry } from 'prom-client';

/** What the queue reports at each scrape: its depth and how long its oldest upload has waited. */
export interface UploadBacklog {
  depth: number;
  lagSeconds: number;
}

/** The uploads' Prometheus series, on the coordinator's registry (docs/metrics.md lists them). */
export class UploadMetrics {
  private readonly attempts: Counter<'target' | 'result'>;

  constructor(registry: Registry, backlog: () => Promise<UploadBacklog>) {
    const registers = [registry];
    this.attempts = new Counter({
      name: 'nixfarm_uploads_total',
      help: 'Upload attempts of an output (with its closure) to an external cache, by cache and result (uploaded, failed, given-up)',
      labelNames: ['target', 'result'],
      registers,
    });
    new Gauge({
      name: 'nixfarm_upload_queue_depth',
      help: 'Uploads not done yet: waiting, running, or waiting for their retry',
      registers,
      async collect() {
        this.set((await backlog()).depth);
      },
    });
    new Gauge({
      name: 'nixfarm_upload_lag_seconds',
      help: 'Age of the oldest upload not done yet (0 when none waits)',
      registers,
      async collect() {
        this.set((await backlog()).lagSeconds);
      },
    });
  }

  attempted(target: string, result: 'uploaded' | 'failed' | 'given-up'): void {
    this.attempts.inc({ target, result });
  }
}
