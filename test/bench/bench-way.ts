import type { Workload } from './workloads.js';

export type WayId = 'a' | 'b' | 'c';
export const WAY_IDS: readonly WayId[] = ['a', 'b', 'c'];

/** A derivation as the coordinator reports it (GET /api/runs/:id/derivations). */
export interface NixfarmDerivationRow {
  drvPath: string;
  name: string;
  status: string;
  worker?: string;
  attempts: number;
  queuedAt?: number;
  startedAt?: number;
  finishedAt?: number;
  timings?: { copyInMs: number; buildMs: number; copyOutMs: number; totalMs: number };
}

/** What one repetition of one workload measured. */
export interface WayRun {
  /** process start of the build command to its exit (evaluation included), ms */
  makespanMs: number;
  /** per derivation: from the way taking it up to its outputs being valid in the host store, ms */
  spansMs: number[];
  /** nixfarm only: the coordinator's per-derivation view, for the profile */
  nixfarmRows?: NixfarmDerivationRow[];
}

/** One way of building: set up once per session, then run any workload with a fresh salt. */
export interface BenchWay {
  readonly id: WayId;
  /** short description for the table header */
  readonly title: string;
  start(): Promise<void>;
  run(workload: Workload, salt: string, progress: (line: string) => void): Promise<WayRun>;
  stop(): Promise<void>;
}
