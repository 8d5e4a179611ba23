import type { Redis } from 'ioredis';
import { betterPlacedThan, canBuild, parseQueueName, readWorkerRegistry, takesNewBuilds, type PlacementCandidate, type WorkerInfo } from '@nixfarm/shared';

export interface PlacementGateOptions {
  redis: Redis;
  self: () => PlacementCandidate;
  /** how long a worker yields the same waiting jobs to a better one before taking them anyway (the better one may be stuck) */
  graceMs?: number;
  /** how long the view of other workers is reused */
  cacheMs?: number;
}

export interface GateDecision {
  take: boolean;
  /** the better-placed workers this one yields to */
  yieldTo: string[];
}

/**
 * Makes a pull model choose like Nix's push model: before taking from a queue,
 * a worker looks at the other live workers that could serve it; if one with a
 * free slot ranks ahead (lower load/speed, then faster), it leaves the job to
 * that one, for a bounded grace time so no job waits on a worker that never comes.
 * The grace time runs while the same jobs stay next in line: a better worker that
 * keeps taking them (a chain whose every link it builds) is never overtaken, one
 * that takes nothing loses them. Workers that take no new builds (draining,
 * paused) are not competitors.
 */
export class PlacementGate {
  private cache: { at: number; workers: WorkerInfo[] } | undefined;
  /** bumped by forgetView, so a read that began before it is not cached after it */
  private generation = 0;
  /** per queue: since when this worker yields the jobs next in line, named by their ids */
  private readonly yielding = new Map<string, { since: number; next: string }>();

  constructor(private readonly options: PlacementGateOptions) {}

  /**
   * `nextInLine` (the ids of the jobs a fetch would take next; none: nothing waits) is asked
   * only when yielding, so the grace time counts from when work actually waits.
   */
  async decide(queue: string, nextInLine: () => Promise<readonly string[]>, now = Date.now()): Promise<GateDecision> {
    const requirement = parseQueueName(queue);
    const workers = await this.liveWorkers(now);
    const self = this.options.self();
    // A draining or paused worker has a free slot it will not use: yielding to it would only delay the build.
    const competitors = workers.filter((w) => w.name !== self.name && takesNewBuilds(w) && canBuild(w, requirement));
    const better = betterPlacedThan(self, competitors);
    if (better.length === 0) {
      this.yielding.delete(queue);
      return { take: true, yieldTo: [] };
    }
    const next = [...(await nextInLine())].sort().join(' ');
    if (next === '') {
      this.yielding.delete(queue);
      return { take: false, yieldTo: better.map((w) => w.name) };
    }
    // Other jobs next in line: the ones yielded before were taken (or outranked), so the better worker is not stuck.
    const previous = this.yielding.get(queue);
    const since = previous !== undefined && previous.next === next ? previous.since : now;
    this.yielding.set(queue, { since, next });
    if (now - since >= (this.options.graceMs ?? 1500)) {
      this.yielding.delete(queue);
      return { take: true, yieldTo: [] };
    }
    return { take: false, yieldTo: better.map((w) => w.name) };
  }

  /** The next decision reads the registry afresh: other workers' loads changed (a wake-up follows their load updates). */
  forgetView(): void {
    this.cache = undefined;
    this.generation++;
  }

  private async liveWorkers(now: number): Promise<WorkerInfo[]> {
    if (this.cache !== undefined && now - this.cache.at < (this.options.cacheMs ?? 100)) return this.cache.workers;
    const generation = this.generation;
    const workers = (await readWorkerRegistry(this.options.redis, now)).filter((w) => w.alive);
    if (generation === this.generation) this.cache = { at: now, workers };
    return workers;
  }
}
