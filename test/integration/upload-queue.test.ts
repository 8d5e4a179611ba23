import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FarmMetrics, UploadQueue, parseUploadTarget } from '@nixfarm/coordinator';
import { createLogger } from '@nixfarm/shared';
import { privateRedisForSuite } from '../harness/private-redis.js';
import { pollFor } from '../harness/poll.js';

/**
 * The upload queue's states on a real redis-server, with a stand-in for the
 * Nix adapter's copy (a unit test of one module: the real copies are the
 * e2e's): retries then given up with the last error, a later run trying
 * afresh, and an output a cache has not copied again for another run.
 */
const OUT = `/nix/store/${'c'.repeat(32)}-out`;
const TARGET = parseUploadTarget('file:///var/cache/nixfarm-upload-queue-test');

describe('upload queue (real Redis, stand-in copy)', () => {
  const redis = privateRedisForSuite('upload queue');

  it('retries with back-off, gives up after its attempts with the last error, then a new run tries afresh; an uploaded output is not copied again', async () => {
    let failing = true;
    const copies: string[] = [];
    const nix = {
      async copyTo(url: string, paths: readonly string[]) {
        copies.push(`${url} ${paths.join(' ')}`);
        if (failing) throw new Error('cache refused: HTTP 503');
      },
      async closure(paths: readonly string[]) {
        return [...paths];
      },
    };
    const metrics = new FarmMetrics();
    const queue = new UploadQueue({
      redis: redis(),
      logger: createLogger({ name: 'test', level: 'silent' }),
      nix,
      stagingDir: '/tmp/nixfarm-upload-queue-test',
      concurrency: 1,
      attempts: 3,
      backoffMs: 20,
      targets: [TARGET],
      metrics,
    });
    queue.start();
    try {
      await queue.runBuilt('run1', [OUT], []);
      const givenUp = await pollFor(
        async () => (await queue.ofRun('run1')).find((u) => u.state === 'given-up'),
        10_000,
        () => 'the upload given up',
      );
      assert.equal(givenUp.attempts, 3);
      assert.match(
        givenUp.error ?? '',
        /^upload of \S+-out to file:\/\/\/var\/cache\/nixfarm-upload-queue-test failed \(attempt 3 of 3, given up: `nixfarm push RUN --to URL` tries again\): cache refused: HTTP 503$/,
      );
      assert.equal(copies.length, 3);
      assert.deepEqual(
        (await queue.summary()).failing.map((u) => u.state),
        ['given-up'],
      );
      const counted = await metrics.registry.getSingleMetricAsString('nixfarm_uploads_total');
      assert.match(counted, /result="failed"\} 2$/m);
      assert.match(counted, /result="given-up"\} 1$/m);

      failing = false;
      await queue.runBuilt('run2', [OUT], []);
      const uploaded = await pollFor(
        async () => (await queue.ofRun('run2')).find((u) => u.state === 'uploaded'),
        10_000,
        () => 'the upload done',
      );
      assert.equal(uploaded.attempts, 1, 'a fresh try');
      assert.equal(uploaded.error, undefined);
      assert.deepEqual((await queue.summary()).failing, []);
      assert.equal(copies.length, 4);

      // Another run with the same output: linked, not copied again.
      await queue.runBuilt('run3', [OUT], []);
      assert.deepEqual(
        (await queue.ofRun('run3')).map((u) => u.state),
        ['uploaded'],
      );
      assert.equal(copies.length, 4);
      assert.deepEqual(await queue.backlog(), { depth: 0, lagSeconds: 0 });
    } finally {
      await queue.close();
    }
  });
});
