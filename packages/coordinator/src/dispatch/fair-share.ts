import { queuePriority } from '@nixfarm/shared';

/** A job the dispatcher is about to queue, with the runs that need its derivation. */
export interface FairShareCandidate {
  hash: string;
  /** BullMQ job id of this attempt */
  jobId: string;
  queue: string;
  /** run priority the job is queued with */
  priority: number;
  criticalPathMs?: number;
  /** every run that needs the derivation (one is charged for it) */
  runIds: readonly string[];
}

/** A queued job to move into the boosted sub-band. */
export interface Promotion {
  queue: string;
  jobId: string;
  priority: number;
}

/** Where a tracked job stands, for `nixfarm why`. */
export interface FairShareStanding {
  runId: string;
  boosted: boolean;
  /** the run's builds running or boosted in this queue and priority */
  claimed: number;
  /** slots × its weight / the weights of every run with work there */
  share: number;
  /** runs with work in this queue and priority, this one included */
  runs: number;
  slots: number;
}

interface Entry {
  hash: string;
  jobId: string;
  runId: string;
  band: Band;
  /** the unboosted BullMQ priority, and the boosted one */
  base: number;
  lifted: number;
  boosted: boolean;
  started: boolean;
  /** arrival order: ties of base priority are FIFO, as in BullMQ */
  seq: number;
}

/** One run's jobs in one band. */
interface Load {
  building: number;
  boostedWaiting: number;
  /** unboosted jobs not started: the candidates for a promotion */
  waiting: Set<Entry>;
}

/** One queue at one run priority: the runs that compete there for the queue's slots. */
interface Band {
  queue: string;
  loads: Map<string, Load>;
}

const claimedOf = (load: Load): number => load.building + load.boostedWaiting;
const hasWork = (load: Load): boolean => load.building + load.boostedWaiting + load.waiting.size > 0;

/** Weights kept for runs seen lately; older ones are read again from the run record when needed. */
const MAX_WEIGHTS = 10_000;

/**
 * Fair shares of the slots between runs of the same priority (issue 15,
 * point 5). Priorities are fixed when a job is queued, so no fixed order can
 * share slots between a large run, already queued, and a small one that comes
 * later. Instead this keeps, in memory, each run's jobs per queue and run
 * priority (a band): how many are building and how many wait. A run below its
 * share (the slots serving the queue × its weight / the weights of the runs
 * with work in the band) while other runs have work there gets its next jobs
 * queued boosted, a sub-band above every unboosted job of its run priority;
 * when one of its builds ends and it has unboosted jobs waiting, the best of
 * them is promoted. A run alone in its band is never boosted, so its
 * critical-path order is untouched. A derivation several runs need is charged
 * to the neediest of them.
 *
 * Pure bookkeeping: the dispatcher reads the slots and weights, queues with
 * the priorities this returns, and applies the promotions.
 */
export class FairShare {
  private readonly entries = new Map<string, Entry>();
  private readonly bands = new Map<string, Band>();
  private readonly weights = new Map<string, number>();
  private readonly slots = new Map<string, number>();
  /** bands where a job left since the last promotions() */
  private readonly touched = new Set<Band>();
  private seq = 0;

  /** Runs among these whose weight is not known (the dispatcher reads them from their run records). */
  unknownRuns(runIds: Iterable<string>): string[] {
    const out = new Set<string>();
    for (const id of runIds) if (!this.weights.has(id)) out.add(id);
    return [...out];
  }

  setWeight(runId: string, weight: number): void {
    this.weights.delete(runId);
    this.weights.set(runId, weight > 0 ? weight : 1);
    if (this.weights.size > MAX_WEIGHTS) this.weights.delete(this.weights.keys().next().value!);
  }

  /** Whether the slots of this queue were counted before. */
  knowsSlots(queue: string): boolean {
    return this.slots.has(queue);
  }

  /** Slots serving each queue: the max-jobs of the live workers that may take its jobs. */
  setSlots(slots: ReadonlyMap<string, number>): void {
    for (const [queue, n] of slots) this.slots.set(queue, n);
  }

  /**
   * Decides the BullMQ priority of each job about to be queued (in the order
   * given), the best ones first where a run may have only some boosted.
   * A derivation queued again (a retry) replaces its earlier job. With
   * `restore` (re-adding what should be queued already, a no-op for a job
   * BullMQ still holds) a counted job stays as it is and a new one is counted
   * unboosted, as most surviving jobs are; promotions boost it later if due.
   */
  place(candidates: readonly FairShareCandidate[], options: { restore?: boolean } = {}): number[] {
    const priorities = new Array<number>(candidates.length);
    const order = candidates.map((c, i) => ({ c, i, base: queuePriority(c.priority, c.criticalPathMs) }));
    order.sort((a, b) => a.base - b.base || a.i - b.i);
    for (const { c, i, base } of order) {
      const known = this.entries.get(c.hash);
      if (options.restore === true && known !== undefined) {
        priorities[i] = known.boosted ? known.lifted : known.base;
        continue;
      }
      this.drop(c.hash);
      const band = this.band(c.queue, c.priority);
      if (c.runIds.length === 0) {
        priorities[i] = base;
        continue;
      }
      const runId = this.neediest(band, c.runIds);
      const load = this.load(band, runId);
      const entry: Entry = {
        hash: c.hash,
        jobId: c.jobId,
        runId,
        band,
        base,
        lifted: queuePriority(c.priority, c.criticalPathMs, true),
        boosted: false,
        started: false,
        seq: this.seq++,
      };
      this.entries.set(c.hash, entry);
      if (options.restore !== true && this.underShare(band, runId)) {
        entry.boosted = true;
        load.boostedWaiting++;
      } else load.waiting.add(entry);
      priorities[i] = entry.boosted ? entry.lifted : entry.base;
    }
    return priorities;
  }

  /**
   * A waiting job's critical path was an estimate (a large run's first part is
   * queued before build times are looked up): its priorities become the
   * corrected ones, boosted or not as before. Returns the new priority of each
   * job still waiting (to apply with changePriority); a started or untracked
   * job is left as it is.
   */
  reprioritize(jobs: ReadonlyArray<{ hash: string; priority: number; criticalPathMs: number }>): Promotion[] {
    const out: Promotion[] = [];
    for (const { hash, priority, criticalPathMs } of jobs) {
      const entry = this.entries.get(hash);
      if (entry === undefined || entry.started) continue;
      entry.base = queuePriority(priority, criticalPathMs);
      entry.lifted = queuePriority(priority, criticalPathMs, true);
      out.push({ queue: entry.band.queue, jobId: entry.jobId, priority: entry.boosted ? entry.lifted : entry.base });
    }
    return out;
  }

  /** A worker started these derivations' builds. */
  started(hashes: Iterable<string>): void {
    for (const hash of hashes) {
      const entry = this.entries.get(hash);
      if (entry === undefined || entry.started) continue;
      const load = this.load(entry.band, entry.runId);
      if (entry.boosted) load.boostedWaiting--;
      else load.waiting.delete(entry);
      entry.started = true;
      load.building++;
    }
  }

  /** A running build was handed back: it waits in its queue again, with the priority it had. */
  handedBack(hash: string): void {
    const entry = this.entries.get(hash);
    if (entry === undefined || !entry.started) return;
    const load = this.load(entry.band, entry.runId);
    load.building--;
    entry.started = false;
    if (entry.boosted) load.boostedWaiting++;
    else load.waiting.add(entry);
  }

  /** These derivations' builds ended: they no longer count. The runs beside them may be promoted (promotions()). */
  ended(hashes: Iterable<string>): void {
    for (const hash of hashes) {
      const band = this.drop(hash);
      if (band !== undefined) this.touched.add(band);
    }
  }

  /** A cancelled run: its jobs are no longer counted (a job another run still needs stays queued as it is). */
  forgetRun(runId: string): void {
    for (const entry of this.entries.values()) {
      if (entry.runId !== runId) continue;
      this.entries.delete(entry.hash);
      this.touched.add(entry.band);
      entry.band.loads.delete(runId);
    }
    this.weights.delete(runId);
  }

  /**
   * The jobs to move into the boosted sub-band now: in each band where a job
   * left, every run below its share promotes its best unboosted waiting jobs
   * until it reaches it.
   */
  promotions(): Promotion[] {
    const out: Promotion[] = [];
    for (const band of this.touched) {
      if (band.loads.size < 2) continue;
      for (const [runId, load] of band.loads) {
        while (load.waiting.size > 0 && this.underShare(band, runId)) {
          const best = bestOf(load.waiting);
          load.waiting.delete(best);
          best.boosted = true;
          load.boostedWaiting++;
          out.push({ queue: band.queue, jobId: best.jobId, priority: best.lifted });
        }
      }
    }
    this.touched.clear();
    return out;
  }

  standing(hash: string): FairShareStanding | undefined {
    const entry = this.entries.get(hash);
    if (entry === undefined) return undefined;
    const load = entry.band.loads.get(entry.runId);
    const runs = [...entry.band.loads.values()].filter(hasWork).length;
    return {
      runId: entry.runId,
      boosted: entry.boosted,
      claimed: load === undefined ? 0 : claimedOf(load),
      share: this.shareOf(entry.band, entry.runId),
      runs,
      slots: this.slots.get(entry.band.queue) ?? 0,
    };
  }

  private band(queue: string, priority: number): Band {
    const key = `${priority} ${queue}`;
    let band = this.bands.get(key);
    if (band === undefined) {
      band = { queue, loads: new Map() };
      this.bands.set(key, band);
    }
    return band;
  }

  private load(band: Band, runId: string): Load {
    let load = band.loads.get(runId);
    if (load === undefined) {
      load = { building: 0, boostedWaiting: 0, waiting: new Set() };
      band.loads.set(runId, load);
    }
    return load;
  }

  private weight(runId: string): number {
    return this.weights.get(runId) ?? 1;
  }

  /** Of the runs that need a derivation, the one furthest below its share. */
  private neediest(band: Band, runIds: readonly string[]): string {
    if (runIds.length === 1) return runIds[0]!;
    let best = runIds[0]!;
    let bestRatio = Number.POSITIVE_INFINITY;
    for (const id of runIds) {
      const load = band.loads.get(id);
      const ratio = (load === undefined ? 0 : claimedOf(load)) / this.weight(id);
      if (ratio < bestRatio) {
        best = id;
        bestRatio = ratio;
      }
    }
    return best;
  }

  private shareOf(band: Band, runId: string): number {
    let total = 0;
    for (const [id, load] of band.loads) if (id === runId || hasWork(load)) total += this.weight(id);
    if (!band.loads.has(runId)) total += this.weight(runId);
    return ((this.slots.get(band.queue) ?? 0) * this.weight(runId)) / total;
  }

  /** Boost only while another run has work in the band: a run alone keeps its critical-path order. */
  private underShare(band: Band, runId: string): boolean {
    let others = false;
    for (const [id, load] of band.loads)
      if (id !== runId && hasWork(load)) {
        others = true;
        break;
      }
    if (!others) return false;
    const load = band.loads.get(runId);
    return (load === undefined ? 0 : claimedOf(load)) < this.shareOf(band, runId);
  }

  /** Forgets a job; returns its band, or undefined when it was not tracked. */
  private drop(hash: string): Band | undefined {
    const entry = this.entries.get(hash);
    if (entry === undefined) return undefined;
    this.entries.delete(hash);
    const load = entry.band.loads.get(entry.runId);
    if (load !== undefined) {
      if (entry.started) load.building--;
      else if (entry.boosted) load.boostedWaiting--;
      else load.waiting.delete(entry);
      if (!hasWork(load)) entry.band.loads.delete(entry.runId);
    }
    return entry.band;
  }
}

function bestOf(entries: ReadonlySet<Entry>): Entry {
  let best: Entry | undefined;
  for (const e of entries) if (best === undefined || e.base < best.base || (e.base === best.base && e.seq < best.seq)) best = e;
  return best!;
}
