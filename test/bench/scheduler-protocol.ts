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

export type ToCoordinator = { type: 'submit' } | { type: 'stop' };

export type FromCoordinator =
  | { type: 'ready'; nodes: number; edges: number; dagMs: number }
  | { type: 'submitted'; runId: string; submitMs: number }
  | { type: 'failed'; error: string };
