/** Messages between the scheduler bench and its coordinator process (Node IPC). */
export interface CoordinatorProcessConfig {
  redisUrl: string;
  gcRootsDir: string;
  /** holds authorized_keys with the instant workers' key */
  stateDir: string;
  size: number;
  layers: number;
  seed: number;
}

/** `memory`: asks for the memory stages measured since the last ask (an older coordinator process does not answer). */
export type ToCoordinator = { type: 'submit' } | { type: 'stop' } | { type: 'memory' };

/**
 * The coordinator process's memory at one point (after a full GC, `--expose-gc`), or its largest
 * sample over a phase (sampled every 250 ms, no GC: more often costs the coordinator CPU): heap used by JS objects and strings, and
 * external (Buffers: Redis replies and pipelines).
 */
export interface MemoryStage {
  stage: string;
  /** true: the largest sample over the phase; false: after a GC at that point */
  peak: boolean;
  rssBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
}

export type FromCoordinator =
  | { type: 'ready'; nodes: number; edges: number; dagMs: number }
  | { type: 'submitted'; runId: string; submitMs: number }
  | { type: 'memory'; stage: MemoryStage }
  | { type: 'memory-done' }
  | { type: 'failed'; error: string };
