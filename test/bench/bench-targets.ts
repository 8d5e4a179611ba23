import type { WayId } from './bench-way.js';
import type { WorkloadId } from './workloads.js';

/** A target of issue 5, as a ratio of median makespans: numerator / denominator compared with limit. */
export interface Target {
  workload: WorkloadId;
  description: string;
  numerator: WayId;
  denominator: WayId;
  /** 'at-most': ratio <= limit; 'at-least': ratio >= limit */
  kind: 'at-most' | 'at-least';
  limit: number;
}

export const TARGETS: readonly Target[] = [
  {
    workload: 'dag-500',
    description: 'nixfarm at least 10x faster than Nix remote builds: (b)/(c) >= 10',
    numerator: 'b',
    denominator: 'c',
    kind: 'at-least',
    limit: 10,
  },
  { workload: 'dag-500', description: 'nixfarm within 2.5x of local: (c)/(a) <= 2.5', numerator: 'c', denominator: 'a', kind: 'at-most', limit: 2.5 },
  { workload: 'cpu-40', description: 'nixfarm within 1.15x of local: (c)/(a) <= 1.15', numerator: 'c', denominator: 'a', kind: 'at-most', limit: 1.15 },
  { workload: 'chain-100', description: 'nixfarm within 3x of local: (c)/(a) <= 3', numerator: 'c', denominator: 'a', kind: 'at-most', limit: 3 },
];

export interface TargetResult extends Target {
  /** undefined when a way it needs was not run */
  ratio?: number;
  met?: boolean;
}

export function evaluateTarget(target: Target, medianMakespanMs: Partial<Record<WayId, number>>): TargetResult {
  const num = medianMakespanMs[target.numerator];
  const den = medianMakespanMs[target.denominator];
  if (num === undefined || den === undefined || den <= 0) return { ...target };
  const ratio = num / den;
  return { ...target, ratio, met: target.kind === 'at-most' ? ratio <= target.limit : ratio >= target.limit };
}
