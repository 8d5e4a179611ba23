/*
 * Ready builds are ordered by the run's priority, then by the longest chain of
 * work still hanging off them (weighted by each derivation's last known build
 * time; computed over a plan by the coordinator's graph/plan-order.ts), then
 * by age: a long chain starts first, so it does not end up alone at the end
 * while short leaves hog the slots.
 */

/**
 * BullMQ priorities run from 1 (first) to 2^21 - 1. Run priority -1000..1000
 * takes the high part; below it one bit for fair share (a boosted job of a
 * run under its share goes before every unboosted job of the same run
 * priority: dispatch/fair-share.ts), then the critical path in 9 bits.
 */
const CP_BUCKETS = 512;
const BAND = 2 * CP_BUCKETS;

/** A log scale: 32 buckets per doubling (steps of about 2%), up to about 18 hours of remaining work. */
export function criticalPathBucket(ms: number): number {
  const seconds = Math.max(0, ms) / 1000;
  return Math.min(CP_BUCKETS - 1, Math.round(32 * Math.log2(1 + seconds)));
}

export function queuePriority(runPriority: number, criticalPathMs: number | undefined, boosted = false): number {
  const clamped = Math.max(-1000, Math.min(1000, Math.round(runPriority)));
  const bucket = criticalPathMs === undefined ? 0 : criticalPathBucket(criticalPathMs);
  return 1 + (1000 - clamped) * BAND + (boosted ? 0 : CP_BUCKETS) + (CP_BUCKETS - 1 - bucket);
}
