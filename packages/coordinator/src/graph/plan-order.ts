/**
 * A plan's derivations as indices into its node array: the order they
 * register in (inputs before dependents, every leaf first) and their critical
 * paths. Typed arrays instead of maps of hash strings: at 100,000 derivations
 * this takes a few MiB and tens of milliseconds, so a run's leaves can be
 * queued before anything that needs the whole graph's data from Redis.
 */
/** hash part -> critical path (ms): a lookup over the plan's index, not a map of its own. */
export type CriticalPaths = Pick<ReadonlyMap<string, number>, 'get'>;

export class PlanOrder<T extends { hash: string; inputs: readonly string[] }> {
  /** node indices, inputs first; the first `leaves` have no input in the plan */
  readonly order: Int32Array;
  readonly leaves: number;
  /** dependents of node i: dependents[dependentsStart[i] .. dependentsStart[i + 1]) */
  private readonly dependentsStart: Int32Array;
  private readonly dependents: Int32Array;
  private readonly index: Map<string, number>;

  constructor(readonly nodes: readonly T[]) {
    const n = nodes.length;
    this.index = new Map();
    for (let i = 0; i < n; i++) this.index.set(nodes[i]!.hash, i);
    // Each input looked up once (-1: not in the plan), then dependents in compressed rows: count, prefix-sum, fill.
    let edges = 0;
    for (const node of nodes) edges += node.inputs.length;
    const inputOf = new Int32Array(edges);
    const indegree = new Int32Array(n);
    const start = new Int32Array(n + 1);
    for (let i = 0, e = 0; i < n; i++)
      for (const input of nodes[i]!.inputs) {
        const j = this.index.get(input) ?? -1;
        inputOf[e++] = j;
        if (j < 0) continue;
        indegree[i]!++;
        start[j + 1]!++;
      }
    for (let i = 0; i < n; i++) start[i + 1]! += start[i]!;
    const fill = start.slice(0, n);
    const dependents = new Int32Array(start[n]!);
    for (let i = 0, e = 0; i < n; i++)
      for (let k = nodes[i]!.inputs.length; k > 0; k--) {
        const j = inputOf[e++]!;
        if (j >= 0) dependents[fill[j]!++] = i;
      }
    // Kahn's algorithm, first in first out: every leaf comes before any node with an input.
    const order = new Int32Array(n);
    let tail = 0;
    for (let i = 0; i < n; i++) if (indegree[i] === 0) order[tail++] = i;
    const leaves = tail;
    for (let head = 0; head < tail; head++) {
      const i = order[head]!;
      for (let k = start[i]!; k < start[i + 1]!; k++) {
        const d = dependents[k]!;
        if (--indegree[d]! === 0) order[tail++] = d;
      }
    }
    if (tail !== n) throw new Error('derivation graph has a cycle');
    this.order = order;
    this.leaves = leaves;
    this.dependentsStart = start;
    this.dependents = dependents;
  }

  /** The node with this hash part, if the plan has it. */
  node(hash: string): T | undefined {
    const i = this.index.get(hash);
    return i === undefined ? undefined : this.nodes[i];
  }

  /** The nodes at order[from .. to), inputs first. */
  slice(from: number, to: number): T[] {
    const out: T[] = [];
    for (let k = from; k < Math.min(to, this.order.length); k++) out.push(this.nodes[this.order[k]!]!);
    return out;
  }

  /** Each node's weight plus the heaviest chain through its dependents (ms), by hash part; undefined for a hash not in the plan. */
  criticalPaths(weightMs: (node: T) => number): CriticalPaths {
    const n = this.nodes.length;
    const path = new Float64Array(n);
    // Dependents come after their inputs in `order`: walked backwards, each node's dependents are done.
    for (let k = n - 1; k >= 0; k--) {
      const i = this.order[k]!;
      let longest = 0;
      for (let j = this.dependentsStart[i]!; j < this.dependentsStart[i + 1]!; j++) longest = Math.max(longest, path[this.dependents[j]!]!);
      path[i] = weightMs(this.nodes[i]!) + longest;
    }
    return {
      get: (hash) => {
        const i = this.index.get(hash);
        return i === undefined ? undefined : path[i];
      },
    };
  }
}
