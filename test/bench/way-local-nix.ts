import type { BenchWay, WayRun } from './bench-way.js';
import { runNixBuild } from './nix-build-run.js';
import type { Workload } from './workloads.js';

/** (a) the limit: `nix-build -j<jobs>` on the coordinator's own machine and store, nothing remote. */
export class LocalNixWay implements BenchWay {
  readonly id = 'a' as const;
  readonly title: string;

  constructor(
    private readonly jobs: number,
    private readonly timeoutMs: number,
  ) {
    this.title = `local nix-build -j${jobs}`;
  }

  async start(): Promise<void> {}

  run(workload: Workload, salt: string, progress: (line: string) => void): Promise<WayRun> {
    return runNixBuild(workload, salt, { maxJobs: this.jobs, timeoutMs: this.timeoutMs, progress });
  }

  async stop(): Promise<void> {}
}
