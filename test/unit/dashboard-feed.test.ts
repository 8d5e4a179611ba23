import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DashboardFeed, isShownAsFailure } from '@nixfarm/coordinator';
import { BUILD_STATUSES, createLogger, type DashboardSnapshot } from '@nixfarm/shared';
import { sleep } from '../harness/poll.js';

/** A collector that counts its reads and takes `delayMs` each. */
function countingCollector(delayMs: number): { collect: () => Promise<DashboardSnapshot>; reads: () => number } {
  let reads = 0;
  return {
    collect: async () => {
      reads++;
      await sleep(delayMs);
      return { at: reads, queues: [], scaling: [], workers: [], running: [], failures: [], runs: [] };
    },
    reads: () => reads,
  };
}

const logger = createLogger({ name: 'dashboard-feed-test', level: 'silent' });

describe('DashboardFeed', () => {
  it('reads the farm once a tick however many watch, gives each the same snapshot, and stops reading when the last leaves', async () => {
    const collector = countingCollector(1);
    const feed = new DashboardFeed({ collect: collector.collect, logger, intervalMs: 50 });
    const seen: number[][] = [[], [], []];
    const leave = seen.map((list) => feed.subscribe((s) => list.push(s.at)));
    await sleep(280);
    const reads = collector.reads();
    // At most one read per 50 ms tick (three watchers reading each would make 15 or more); fewer on a loaded machine, where a slow read stretches the tick.
    assert.ok(reads >= 1 && reads <= 7, `about one read per 50 ms, not one per watcher: ${reads}`);
    assert.deepEqual(seen[1], seen[0]);
    assert.deepEqual(seen[2], seen[0]);
    for (const l of leave) l();
    await sleep(20);
    const after = collector.reads();
    await sleep(200);
    assert.equal(collector.reads(), after, 'no reads with nobody watching');
  });

  it('gives a new watcher the last snapshot at once', async () => {
    const feed = new DashboardFeed({ collect: countingCollector(1).collect, logger, intervalMs: 1000 });
    const leaveFirst = feed.subscribe(() => undefined);
    await sleep(30);
    let got: number | undefined;
    const leaveSecond = feed.subscribe((s) => (got ??= s.at));
    assert.equal(got, 1, 'before the next tick');
    leaveFirst();
    leaveSecond();
  });

  it('stretches the interval to four times a slow read', async () => {
    const collector = countingCollector(60);
    const feed = new DashboardFeed({ collect: collector.collect, logger, intervalMs: 10 });
    const leave = feed.subscribe(() => undefined);
    await sleep(700);
    leave();
    // each cycle: 60 ms read + at least 240 ms wait: at most 3 reads in 700 ms (at 10 ms it would be 10)
    assert.ok(collector.reads() <= 3, `${collector.reads()} reads`);
  });

  it('runs one loop after a stop and a new watcher while a read is in flight', async () => {
    const collector = countingCollector(40);
    const feed = new DashboardFeed({ collect: collector.collect, logger, intervalMs: 100 });
    feed.subscribe(() => undefined)();
    const leave = feed.subscribe(() => undefined);
    await sleep(550);
    leave();
    // one loop: a read every 140 ms (40 + 100) is about 4-5 in 550 ms; two loops would be 8 or more
    assert.ok(collector.reads() <= 6, `${collector.reads()} reads`);
  });

  it('lists as failures exactly the statuses where the build itself went wrong', () => {
    assert.deepEqual(BUILD_STATUSES.filter(isShownAsFailure), [
      'failed',
      'aborted',
      'timed-out',
      'log-limit-exceeded',
      'output-limit-exceeded',
      'cached-failure',
    ]);
  });
});
