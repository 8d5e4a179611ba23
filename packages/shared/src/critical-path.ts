/**
 * Ready builds are ordered by the run's priority, then by the longest chain of
 * work still hanging off them (weighted by each derivation's last known build
 * time), then by age: a long chain starts first, so it does not end up alone
 * at the end while short leaves hog the slots.
 */
export interface CriticalPathNode {
  hash: string;
  /** hash parts of this node's inputs within the same plan */
  inputs: readonly string[];
  /** expected build time in ms */
  weightMs: number;
}

/** For each node, its weight plus the heaviest path through its dependents. Nodes may come in any order; the graph must be acyclic. */
/** hash -> hashes of the nodes that take it as an input, counting only inputs among `nodes`. */
export function dependentsOf(nodes: ReadonlyArray<{ hash: string; inputs: readonly string[] }>): Map<string, string[]> {
  const known = new Set(nodes.map((n) => n.hash));
  const dependents = new Map<string, string[]>();
  for (const n of nodes) {
    for (const i of n.inputs) {
      if (!known.has(i)) continue;
      const list = dependents.get(i);
      if (list === undefined) dependents.set(i, [n.hash]);
      else list.push(n.hash);
    }
  }
  return dependents;
}

export function criticalPaths(nodes: readonly CriticalPathNode[]): Map<string, number> {
  const byHash = new Map(nodes.map((n) => [n.hash, n]));
  const dependents = dependentsOf(nodes);
  const result = new Map<string, number>();
  // Iterative post-order: dependents first, without recursion depth limits on long chains.
  for (const start of nodes) {
    if (result.has(start.hash)) continue;
    const stack: Array<{ hash: string; expanded: boolean }> = [{ hash: start.hash, expanded: false }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (result.has(top.hash)) {
        stack.pop();
        continue;
      }
      const deps = dependents.get(top.hash) ?? [];
      if (!top.expanded) {
        top.expanded = true;
        for (const d of deps) if (!result.has(d)) stack.push({ hash: d, expanded: false });
        continue;
      }
      stack.pop();
      let longest = 0;
      for (const d of deps) longest = Math.max(longest, result.get(d) ?? 0);
      result.set(top.hash, byHash.get(top.hash)!.weightMs + longest);
    }
  }
  return result;
}

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
