import { canBuild, type SystemScaling, type WorkerCapabilities } from '@nixfarm/shared';

export interface WaitingWork {
  /** the queue's name, for a stable order of assignment */
  name: string;
  system: string;
  requiredFeatures: readonly string[];
  waiting: number;
}

export interface CapacityOffer extends WorkerCapabilities {
  name: string;
  /** heartbeat fresh */
  alive: boolean;
  /** not draining, not paused */
  takesNewBuilds: boolean;
  running: number;
  maxJobs: number;
}

/**
 * The scaling signal, per system: how many more workers the waiting work
 * needs beyond what live capable workers offer now.
 *
 * Each queue's waiting jobs first fill the free slots (max-jobs minus running)
 * of live workers that take new builds and may build it (Nix's rule); a slot
 * is counted once, so two queues cannot both count on the same slot, and the
 * most constrained queues are served first (a greedy assignment: exact for
 * the usual one-system workers, close otherwise). What is left is `unserved`. One more worker of
 * a system is assumed to bring the median max-jobs of the workers registered
 * for it (live or not; of all workers if none is; 1 if none is registered),
 * so `workersNeeded = ceil(unserved / slotsPerWorker)`: 0 when the farm keeps
 * up, at least 1 whenever work of the system waits that no free slot takes.
 * Every system with a queue or a live worker is listed, so an autoscaler also
 * sees the 0 that lets it scale down.
 */
export function scalingSignal(work: readonly WaitingWork[], workers: readonly CapacityOffer[]): SystemScaling[] {
  const free = new Map(workers.filter((w) => w.alive && w.takesNewBuilds).map((w) => [w.name, Math.max(0, w.maxJobs - w.running)]));
  const bySystem = new Map<string, { waiting: number; freeSlots: number; unserved: number }>();
  const entry = (system: string) => {
    let e = bySystem.get(system);
    if (e === undefined) bySystem.set(system, (e = { waiting: 0, freeSlots: 0, unserved: 0 }));
    return e;
  };
  for (const w of workers) if (w.alive) for (const s of w.systems) entry(s);
  // The most constrained first, so that flexible capacity is not spent on work others could take:
  // queues with the fewest capable workers, and within a queue the workers that could serve the fewest queues.
  const capable = new Map(
    work.map((q) => [q, workers.filter((w) => free.has(w.name) && canBuild(w, { system: q.system, requiredFeatures: q.requiredFeatures }))]),
  );
  const reach = new Map(workers.map((w) => [w.name, work.filter((q) => capable.get(q)!.includes(w)).length]));
  const order = [...work].sort((a, b) => capable.get(a)!.length - capable.get(b)!.length || a.name.localeCompare(b.name));
  for (const q of order) {
    const e = entry(q.system);
    e.waiting += q.waiting;
    let left = q.waiting;
    const candidates = [...capable.get(q)!].sort((a, b) => reach.get(a.name)! - reach.get(b.name)! || a.name.localeCompare(b.name));
    for (const w of candidates) {
      if (left === 0) break;
      const slots = free.get(w.name) ?? 0;
      const taken = Math.min(slots, left);
      free.set(w.name, slots - taken);
      left -= taken;
      e.freeSlots += taken;
    }
    e.unserved += left;
  }
  // Free slots nobody claimed still count for the systems their workers serve (shown, not used in the signal).
  for (const w of workers) {
    const slots = free.get(w.name) ?? 0;
    if (slots > 0) for (const s of w.systems) entry(s).freeSlots += slots;
  }
  const allMax = workers.map((w) => w.maxJobs);
  return [...bySystem.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([system, e]) => {
      const forSystem = workers.filter((w) => w.systems.includes(system)).map((w) => w.maxJobs);
      const slotsPerWorker = Math.max(1, median(forSystem.length > 0 ? forSystem : allMax) ?? 1);
      return {
        system,
        waiting: e.waiting,
        freeSlots: e.freeSlots,
        unserved: e.unserved,
        slotsPerWorker,
        workersNeeded: Math.ceil(e.unserved / slotsPerWorker),
      };
    });
}

/** The lower median, so that a worker count is never rounded up to a slot count no worker has. */
function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}
