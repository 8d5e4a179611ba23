import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FairShare, type FairShareCandidate } from '@nixfarm/coordinator';
import { queuePriority } from '@nixfarm/shared';

const QUEUE = 'build@x86_64-linux';

function candidate(hash: string, runIds: string[], criticalPathMs = 1000, priority = 0): FairShareCandidate {
  return { hash, jobId: `${hash}-0`, queue: QUEUE, priority, criticalPathMs, runIds };
}

interface SimJob {
  hash: string;
  run: string;
  priority: number;
  seq: number;
}

/**
 * A queue as BullMQ orders it (lowest priority first, ties in arrival order;
 * a changed priority re-enters at the end of its ties), slots that take the
 * head whenever free, and builds that all take `buildTicks`. Each run is a
 * list of chains: a chain's next link is ready when the one before ends.
 */
class Farm {
  readonly fair = new FairShare();
  private readonly queue = new Map<string, SimJob>();
  private readonly running: Array<{ job: SimJob; endsAt: number }> = [];
  private readonly chains = new Map<string, string[][]>();
  private seq = 0;
  tick = 0;
  /** run -> ticks when each of its builds ran (one entry per build per tick) */
  readonly busy = new Map<string, number>();
  readonly finishedAt = new Map<string, number>();
  readonly startOrder: string[] = [];

  constructor(
    private readonly slots: number,
    private readonly buildTicks = 10,
  ) {
    this.fair.setSlots(new Map([[QUEUE, slots]]));
  }

  /** A run of chains, each chain a list of hashes (link 0 first); critical paths count whole links left. */
  submit(run: string, chains: string[][], weight = 1): void {
    this.fair.setWeight(run, weight);
    this.chains.set(
      run,
      chains.map((c) => [...c]),
    );
    this.release(
      run,
      chains.map((c) => ({ hash: c[0]!, cp: c.length })),
    );
  }

  private release(run: string, ready: Array<{ hash: string; cp: number }>): void {
    const priorities = this.fair.place(ready.map((r) => candidate(r.hash, [run], r.cp * 1000)));
    ready.forEach((r, i) => {
      this.queue.set(r.hash, { hash: r.hash, run, priority: priorities[i]!, seq: this.seq++ });
    });
  }

  private applyPromotions(): void {
    for (const p of this.fair.promotions()) {
      const job = this.queue.get(p.jobId.replace(/-0$/, ''));
      if (job === undefined) continue;
      job.priority = p.priority;
      job.seq = this.seq++;
    }
  }

  step(): void {
    this.tick++;
    const ended: SimJob[] = [];
    for (let i = this.running.length - 1; i >= 0; i--)
      if (this.running[i]!.endsAt <= this.tick) {
        ended.push(this.running[i]!.job);
        this.running.splice(i, 1);
      }
    this.fair.ended(ended.map((j) => j.hash));
    for (const job of ended) {
      const chains = this.chains.get(job.run)!;
      const chain = chains.find((c) => c[0] === job.hash)!;
      chain.shift();
      if (chain.length > 0) this.release(job.run, [{ hash: chain[0]!, cp: chain.length }]);
      if (chains.every((c) => c.length === 0)) this.finishedAt.set(job.run, this.tick);
    }
    this.applyPromotions();
    const started: string[] = [];
    while (this.running.length < this.slots && this.queue.size > 0) {
      let head: SimJob | undefined;
      for (const j of this.queue.values()) if (head === undefined || j.priority < head.priority || (j.priority === head.priority && j.seq < head.seq)) head = j;
      this.queue.delete(head!.hash);
      this.running.push({ job: head!, endsAt: this.tick + this.buildTicks });
      started.push(head!.hash);
      this.startOrder.push(head!.hash);
    }
    this.fair.started(started);
    for (const { job } of this.running) this.busy.set(job.run, (this.busy.get(job.run) ?? 0) + 1);
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) this.step();
  }

  resetBusy(): void {
    this.busy.clear();
  }
}

/** `width` independent chains of `depth` links each, hashes prefixed by the run. */
function layered(run: string, width: number, depth: number): string[][] {
  return Array.from({ length: width }, (_, w) => Array.from({ length: depth }, (_, d) => `${run}-${w}-${d}`));
}

describe('fair share between runs of one priority', () => {
  it('never boosts a run alone in its queue, so its critical-path order is untouched', () => {
    const fair = new FairShare();
    fair.setSlots(new Map([[QUEUE, 4]]));
    const cps = [5000, 1000, 30_000, 1000, 2000];
    const priorities = fair.place(cps.map((cp, i) => candidate(`a${i}`, ['A'], cp)));
    assert.deepEqual(
      priorities,
      cps.map((cp) => queuePriority(0, cp)),
    );
    fair.started(['a2', 'a0']);
    fair.ended(['a2']);
    assert.deepEqual(fair.promotions(), [], 'nothing to promote for a lone run');
  });

  it('boosts a run below its share beside another, its best jobs first, above every unboosted job', () => {
    const fair = new FairShare();
    fair.setSlots(new Map([[QUEUE, 4]]));
    fair.place(Array.from({ length: 50 }, (_, i) => candidate(`big${i}`, ['big'], 3_600_000)));
    fair.started(['big0', 'big1', 'big2', 'big3']);
    // Share of the small run: 4 slots × 1 / 2 = 2 builds; its two longest chains are boosted, the third is not.
    const priorities = fair.place([candidate('s-short', ['small'], 1000), candidate('s-long', ['small'], 4000), candidate('s-mid', ['small'], 3000)]);
    assert.equal(priorities[1], queuePriority(0, 4000, true));
    assert.equal(priorities[2], queuePriority(0, 3000, true));
    assert.equal(priorities[0], queuePriority(0, 1000));
    assert.ok(queuePriority(0, 0, true) < queuePriority(0, 3_600_000 * 20), 'a boosted job goes before the longest unboosted chain');
    assert.ok(queuePriority(1, 0) < queuePriority(0, 1e9, true), 'but never before a higher run priority');
    assert.deepEqual(fair.standing('s-long'), { runId: 'small', boosted: true, claimed: 2, share: 2, runs: 2, slots: 4 });
    // One of its builds ends: the best unboosted job is promoted.
    fair.started(['s-long']);
    fair.ended(['s-long']);
    assert.deepEqual(fair.promotions(), [{ queue: QUEUE, jobId: 's-short-0', priority: queuePriority(0, 1000, true) }]);
    // The big run never gets boosted while it holds more than its share.
    fair.ended(['big0']);
    assert.deepEqual(fair.promotions(), []);
  });

  it('finishes a small run beside a large one within 2x its critical path, and the large one keeps the rest of the slots', () => {
    const farm = new Farm(4, 10);
    farm.submit('big', layered('big', 200, 10));
    farm.run(25);
    farm.submit('small', [['s0', 's1', 's2', 's3'], ['t0']]);
    const submittedAt = farm.tick;
    farm.run(200);
    const wall = farm.finishedAt.get('small')! - submittedAt;
    // Critical path: 4 links of 10 ticks.
    assert.ok(wall <= 80, `small run took ${wall} ticks for a 40-tick critical path`);
    assert.ok(farm.busy.get('big')! > farm.busy.get('small')!, 'the large run kept building beside it');
  });

  it('gives runs with --share 3 and --share 1 about 3/4 and 1/4 of the slots', () => {
    const farm = new Farm(8, 10);
    farm.submit('one', layered('one', 400, 5), 1);
    farm.submit('three', layered('three', 400, 5), 3);
    farm.run(100);
    farm.resetBusy();
    farm.run(400);
    const three = farm.busy.get('three')!;
    const one = farm.busy.get('one')!;
    const part = three / (three + one);
    assert.ok(part > 0.7 && part < 0.8, `share 3 got ${(part * 100).toFixed(1)} % of the busy slot-ticks`);
  });

  it('shares equally between two large runs of equal weight, whichever came first', () => {
    const farm = new Farm(4, 10);
    farm.submit('first', layered('first', 300, 5));
    farm.run(30);
    farm.submit('second', layered('second', 300, 5));
    farm.run(30);
    farm.resetBusy();
    farm.run(300);
    const part = farm.busy.get('second')! / (farm.busy.get('first')! + farm.busy.get('second')!);
    assert.ok(part > 0.45 && part < 0.55, `the later run got ${(part * 100).toFixed(1)} %`);
  });

  it('charges a shared derivation to the neediest of its runs, and forgets a cancelled run', () => {
    const fair = new FairShare();
    fair.setSlots(new Map([[QUEUE, 2]]));
    fair.place([candidate('a0', ['A']), candidate('a1', ['A']), candidate('a2', ['A'])]);
    fair.started(['a0', 'a1']);
    const [shared] = fair.place([candidate('shared', ['A', 'B'])]);
    assert.equal(fair.standing('shared')?.runId, 'B');
    assert.equal(shared, queuePriority(0, 1000, true), 'B was alone below its share: its job is boosted');
    const [b1] = fair.place([candidate('b1', ['B'])]);
    assert.equal(b1, queuePriority(0, 1000), 'B holds its share of 1 already');
    fair.forgetRun('B');
    assert.equal(fair.standing('shared'), undefined);
    assert.deepEqual(fair.promotions(), [], 'A is alone again: nothing to promote');
  });

  it('replaces a retried job, and counts a handed-back build as waiting again', () => {
    const fair = new FairShare();
    fair.setSlots(new Map([[QUEUE, 2]]));
    fair.place([candidate('a0', ['A']), candidate('a1', ['A']), candidate('a2', ['A'])]);
    fair.place([candidate('b0', ['B']), candidate('b1', ['B'])]);
    assert.equal(fair.standing('b0')?.boosted, true);
    fair.started(['b0']);
    fair.handedBack('b0');
    assert.deepEqual(fair.standing('b0'), { runId: 'B', boosted: true, claimed: 1, share: 1, runs: 2, slots: 2 });
    // A retry of b0 (next attempt) replaces it rather than counting it twice.
    fair.place([{ ...candidate('b0', ['B']), jobId: 'b0-1' }]);
    assert.equal(fair.standing('b0')?.claimed, 1);
    // Restoring what is queued already leaves it as it is; a job not counted yet (after a restart) counts unboosted, as BullMQ holds most.
    const [kept, restored] = fair.place([candidate('b0', ['B']), candidate('b2', ['B'], 5000)], { restore: true });
    assert.equal(kept, queuePriority(0, 1000, true));
    assert.equal(restored, queuePriority(0, 5000));
    assert.equal(fair.standing('b2')?.boosted, false);
  });

  it('corrects an estimated critical path of a waiting job, boosted or not, and leaves a started one as it is', () => {
    const fair = new FairShare();
    fair.setSlots(new Map([[QUEUE, 1]]));
    fair.setWeight('a', 1);
    fair.setWeight('b', 1);
    fair.place([candidate('a1', ['a']), candidate('a2', ['a']), candidate('a3', ['a'])]);
    const [boosted] = fair.place([candidate('b1', ['b'])]);
    assert.equal(boosted, queuePriority(0, 1000, true), 'b is below its share beside a');
    fair.started(['a1']);
    const changes = fair.reprioritize(['a1', 'a2', 'b1', 'unknown'].map((hash) => ({ hash, priority: 0, criticalPathMs: 60_000 })));
    assert.deepEqual(changes, [
      { queue: QUEUE, jobId: 'a2-0', priority: queuePriority(0, 60_000) },
      { queue: QUEUE, jobId: 'b1-0', priority: queuePriority(0, 60_000, true) },
    ]);
  });
});
