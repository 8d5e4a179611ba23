import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DerivationView } from '@nixfarm/shared';
import { runTimeline, type TimelineInput } from '@nixfarm/coordinator';

const path = (c: string, name: string): string => `/nix/store/${c.repeat(32)}-${name}.drv`;

/** A derivation view as the graph shows it, with only what the timeline reads. */
function drv(c: string, name: string, fields: Partial<DerivationView>, inputs: string[] = []): TimelineInput {
  return {
    view: { drvPath: path(c, name), name, system: 'x86_64-linux', requiredFeatures: [], status: 'succeeded', pendingInputs: 0, attempts: 1, ...fields },
    inputs,
  };
}

const timings = (copyInMs: number, buildMs: number, copyOutMs: number) => ({ copyInMs, buildMs, copyOutMs, totalMs: copyInMs + buildMs + copyOutMs + 10 });

// Two leaves a (w1) and b (w2), then c (w2) needing both; d a cached failure, e built before the run, f never started.
const A = drv('a', 'a', { worker: 'w1', queuedAt: 1000, startedAt: 1100, finishedAt: 2000, timings: timings(100, 700, 50) });
const B = drv('b', 'b', { worker: 'w2', queuedAt: 1000, startedAt: 1050, finishedAt: 1500, timings: timings(50, 300, 50) });
const C = drv('c', 'c', { worker: 'w2', queuedAt: 2000, startedAt: 2100, finishedAt: 3000, timings: timings(0, 800, 100) }, [A.view.drvPath, B.view.drvPath]);
const D = drv('d', 'd', { status: 'cached-failure', worker: 'w1', startedAt: 100, finishedAt: 200, timings: timings(1, 1, 1) });
const E = drv('f', 'e', { worker: 'w1', queuedAt: 300, startedAt: 400, finishedAt: 500, timings: timings(10, 80, 10) });
const F = drv('g', 'f', { status: 'dependency-failed', finishedAt: 2000 }, [C.view.drvPath]);
const RUN = { id: 'run0001', status: 'failed' as const, createdAt: 1000, finishedAt: 3100 };

describe('run timeline', () => {
  const t = runTimeline(RUN, [A, B, C, D, E, F], 99_999);
  const of = (name: string) => t.derivations.find((d) => d.name === name)!;

  it('lays copy in, build and copy out end to end to finish at finishedAt, after the queue wait', () => {
    assert.deepEqual(of('a').segments, [
      { kind: 'wait', start: 1000, end: 1100 },
      { kind: 'copy-in', start: 1150, end: 1250 },
      { kind: 'build', start: 1250, end: 1950 },
      { kind: 'copy-out', start: 1950, end: 2000 },
    ]);
    assert.deepEqual(
      of('c').segments.map((s) => [s.kind, s.end - s.start]),
      [
        ['wait', 100],
        ['copy-in', 0],
        ['build', 800],
        ['copy-out', 100],
      ],
    );
    assert.equal(t.start, 1000);
    assert.equal(t.end, 3100);
    assert.equal(t.wallMs, 2100);
    assert.equal(t.active, false);
  });

  it('draws no bars for a cached failure, a derivation built before the run, or one that never started', () => {
    for (const name of ['d', 'e', 'f']) {
      assert.equal(of(name).built, false, name);
      assert.deepEqual(of(name).segments, [], name);
      assert.equal(of(name).critical, false, name);
    }
    assert.deepEqual(
      t.derivations.filter((d) => d.built).map((d) => d.name),
      ['a', 'b', 'c'],
    );
  });

  it('walks the critical path back from the derivation that ended last through the input that ended last', () => {
    assert.deepEqual(t.criticalPath, [A.view.drvPath, C.view.drvPath]);
    assert.deepEqual(
      t.derivations.filter((d) => d.critical).map((d) => d.name),
      ['a', 'c'],
    );
  });

  it("sums each worker's builds, busy time (overlaps once) and critical-path work, and names the bottleneck", () => {
    assert.deepEqual(t.workers, [
      { name: 'w1', builds: 1, busyMs: 850, busyShare: 850 / 2100, copyInMs: 100, buildMs: 700, copyOutMs: 50, criticalPathMs: 850, criticalPathBuilds: 1 },
      { name: 'w2', builds: 2, busyMs: 1300, busyShare: 1300 / 2100, copyInMs: 50, buildMs: 1100, copyOutMs: 150, criticalPathMs: 900, criticalPathBuilds: 1 },
    ]);
    assert.equal(t.bottleneck, 'w2', 'w2 held 900 ms of the critical path, w1 850');
    assert.deepEqual(t.totals, { queueWaitMs: 250, copyInMs: 150, buildMs: 1800, copyOutMs: 200 });
  });

  it('counts overlapping builds of one worker once in its busy time', () => {
    const x = drv('h', 'x', { worker: 'w1', startedAt: 1000, finishedAt: 2000, timings: timings(0, 1000, 0) });
    const y = drv('i', 'y', { worker: 'w1', startedAt: 1500, finishedAt: 2500, timings: timings(0, 1000, 0) });
    const w = runTimeline(RUN, [x, y], 0).workers[0]!;
    assert.equal(w.busyMs, 1500);
    assert.equal(w.buildMs, 2000);
  });

  it('shows an active run up to now: a running build as one bar to now, queued ones without bars', () => {
    const running = drv('j', 'r', { status: 'running', worker: 'w2', queuedAt: 1000, startedAt: 1200 });
    const queued = drv('k', 'q', { status: 'queued', queuedAt: 1300 });
    const live = runTimeline({ id: 'run0002', status: 'running', createdAt: 1000 }, [running, queued], 1700);
    assert.equal(live.active, true);
    assert.equal(live.end, 1700);
    assert.deepEqual(live.derivations[0]!.segments, [
      { kind: 'wait', start: 1000, end: 1200 },
      { kind: 'running', start: 1200, end: 1700 },
    ]);
    assert.equal(live.derivations[1]!.built, false);
    assert.deepEqual(live.criticalPath, [running.view.drvPath]);
    assert.equal(live.bottleneck, 'w2');
  });

  it('names no bottleneck and no critical path when nothing was built', () => {
    const empty = runTimeline(RUN, [D, E], 5000);
    assert.equal(empty.bottleneck, undefined);
    assert.deepEqual(empty.criticalPath, []);
    assert.deepEqual(empty.workers, []);
  });

  it('counts a build the coordinator ended without timings as building from its start to its end', () => {
    const lost = drv('l', 'lost', { status: 'aborted', worker: 'w1', queuedAt: 1000, startedAt: 1100, finishedAt: 1600 });
    assert.deepEqual(runTimeline(RUN, [lost], 0).derivations[0]!.segments, [
      { kind: 'wait', start: 1000, end: 1100 },
      { kind: 'build', start: 1100, end: 1600 },
    ]);
  });
});
