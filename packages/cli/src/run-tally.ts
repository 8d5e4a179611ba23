import type { RunEvent } from '@nixfarm/shared';

/**
 * What a run's event stream says about its derivations: how many are built,
 * running and failed. Counted as sets of .drv paths, not events: a retried or
 * handed-back build starts again under the same path, and must count once.
 */
export class RunTally {
  private readonly running = new Set<string>();
  private readonly done = new Set<string>();
  private readonly failed = new Set<string>();

  /** total: the run's derivations; undefined for a jobset run, which grows while it runs */
  constructor(readonly total?: number) {}

  apply(event: RunEvent): void {
    switch (event.type) {
      case 'drv-started':
        this.running.add(event.drvPath);
        return;
      // The attempt ended without a verdict; the derivation waits in its queue until its next start.
      case 'drv-handed-back':
      case 'drv-retrying':
        this.running.delete(event.drvPath);
        return;
      case 'drv-finished':
        this.running.delete(event.drvPath);
        (event.status === 'succeeded' ? this.done : this.failed).add(event.drvPath);
        return;
      case 'run-started':
      case 'drv-queued':
      case 'drv-unsupported':
      case 'run-finished':
        return;
    }
  }

  /** `[done/total done, N running, M failed]`, the prefix of every progress line */
  toString(): string {
    return `[${this.done.size}${this.total === undefined ? '' : `/${this.total}`} done, ${this.running.size} running${this.failed.size > 0 ? `, ${this.failed.size} failed` : ''}]`;
  }
}
