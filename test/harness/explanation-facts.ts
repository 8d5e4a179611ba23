import type { NodeFacts, WorkerFacts } from '@nixfarm/coordinator';

/** What the explanation tests build their facts from: one fixed moment and one derivation. */
export const NOW = 1_700_000_000_000;
export const HASH = '0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d';
export const DRV = `/nix/store/${HASH}-hello-2.12.drv`;

/** A live idle x86_64-linux worker with one slot, seen a second before NOW. */
export function workerFacts(name: string, overrides: Partial<WorkerFacts> = {}): WorkerFacts {
  return {
    name,
    systems: ['x86_64-linux'],
    supportedFeatures: [],
    mandatoryFeatures: [],
    maxJobs: 1,
    speedFactor: 1,
    running: 0,
    heartbeatAt: NOW - 1000,
    alive: true,
    ...overrides,
  };
}

/** The derivation queued and ready, in one active run. */
export function nodeFacts(overrides: Partial<NodeFacts> = {}): NodeFacts {
  return {
    hash: HASH,
    drvPath: DRV,
    name: 'hello-2.12',
    system: 'x86_64-linux',
    requiredFeatures: [],
    status: 'queued',
    pendingInputs: 0,
    attempts: 0,
    runs: [{ id: 'lxk2f9a1b2', active: true }],
    ...overrides,
  };
}
