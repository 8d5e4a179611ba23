import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BuildLogStore, LogRenderer } from '@nixfarm/coordinator';
import { LOG_FIELD, logAttemptKey } from '@nixfarm/shared';

const DRV = '/nix/store/0c5x4qzz9ahz1hx2hd4a3r6s7yg3d2x8-hello-2.12.drv';

function entry(worker: string, attempt: number, fields: Record<string, string>): Record<string, string> {
  return { [LOG_FIELD.worker]: worker, [LOG_FIELD.jobId]: 'job1', [LOG_FIELD.attempt]: String(attempt), ...fields };
}

describe('build log rendering', () => {
  it('gives one complete attempt as the plain log', () => {
    const r = new LogRenderer();
    const text =
      r.consume(entry('w1', 1, { [LOG_FIELD.lines]: 'a\nb' })) +
      r.consume(entry('w1', 1, { [LOG_FIELD.lines]: 'c' })) +
      r.consume(entry('w1', 1, { [LOG_FIELD.end]: 'succeeded' })) +
      r.finish();
    assert.equal(text, 'a\nb\nc\n');
    assert.equal(r.complete(), true);
    assert.deepEqual(r.attemptList, [{ worker: 'w1', jobId: 'job1', attempt: 1, lines: 3, end: 'succeeded' }]);
  });

  it('marks an attempt without an end incomplete when another follows, and heads the re-run', () => {
    const r = new LogRenderer();
    const text =
      r.consume(entry('w1', 1, { [LOG_FIELD.lines]: 'part one' })) +
      r.consume(entry('w2', 2, { [LOG_FIELD.lines]: 'part one' })) +
      r.consume(entry('w2', 2, { [LOG_FIELD.end]: 'succeeded' })) +
      r.finish();
    assert.equal(text, 'part one\nnixfarm: log incomplete: worker w1 stopped reporting (job job1, try 1)\nnixfarm: try 2 (job job1) on worker w2:\npart one\n');
    assert.equal(r.complete(), false);
  });

  it('leaves the attempt that still builds unmarked, and marks it once it is no longer live', () => {
    const r = new LogRenderer();
    r.consume(entry('w1', 1, { [LOG_FIELD.lines]: 'x' }));
    assert.equal(r.finish(logAttemptKey('w1', 1, 'job1')), '');
    assert.equal(r.complete(logAttemptKey('w1', 1, 'job1')), true);
    assert.match(r.finish(), /^nixfarm: log incomplete: worker w1/);
  });
});

describe('build log files', () => {
  it("puts a log in Nix's layout, named only from a valid .drv path", () => {
    const store = new BuildLogStore({ logDir: '/var/log/nix' });
    assert.equal(store.pathFor(DRV), '/var/log/nix/drvs/0c/5x4qzz9ahz1hx2hd4a3r6s7yg3d2x8-hello-2.12.drv');
    for (const bad of [
      '/nix/store/../../etc/passwd.drv',
      '/nix/store/0c5x4qzz9ahz1hx2hd4a3r6s7yg3d2x8-hello',
      '/tmp/x.drv',
      `/nix/store/0c5x4qzz9ahz1hx2hd4a3r6s7yg3d2x8-a/../b.drv`,
    ]) {
      assert.throws(() => store.pathFor(bad), /not a valid Nix store path/, bad);
    }
  });
});
