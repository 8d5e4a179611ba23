import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { AuthorizedKeys, BuildDurations, CoordinatorNix, SchedulingCore, type OutputVerifier, type PlannedDerivation } from '@nixfarm/coordinator';
import { createLogger, queuePriority, queuedJobId, submitRunRequestSchema } from '@nixfarm/shared';
import { startPrivateRedis, type PrivateRedis } from '../harness/private-redis.js';
import { hashOf, plannedDerivation } from '../harness/planned-derivation.js';

// A run's first part is queued with estimated critical paths, corrected once build times are known.

function node(name: string, inputs: string[] = []): PlannedDerivation {
  const hash = hashOf(name);
  return plannedDerivation({ hash, name, out: `/nix/store/${hash}-${name}`, inputs: inputs.map(hashOf) });
}

const nothingChecked: OutputVerifier = { invalidPaths: async () => new Set<string>() };

describe('submitting an evaluated run', () => {
  let server: PrivateRedis;
  let redis: Redis;
  let core: SchedulingCore;
  let roots: string;

  before(async () => {
    server = await startPrivateRedis({});
    redis = new Redis(server.url, { maxRetriesPerRequest: null });
    roots = await mkdtemp(path.join(os.tmpdir(), 'nixfarm-submission-'));
    const logger = createLogger({ name: 'submission-test', level: 'warn' });
    core = new SchedulingCore({
      redis,
      logger,
      nix: new CoordinatorNix({ logger, nixOptions: [] }),
      verifier: nothingChecked,
      gcRootsDir: roots,
      // no worker reports here: nobody is authorised
      reports: { keys: new AuthorizedKeys(roots) },
    });
    await core.start();
  });
  after(async () => {
    await core?.stop();
    redis?.disconnect();
    await server?.stop();
    if (roots !== undefined) await rm(roots, { recursive: true, force: true });
  });

  it('queues the leaves first with their own weight, then corrects their critical paths and waiting priorities from the build times', async () => {
    // A chain of slow builds above one leaf, and a lone leaf: listed dependents first, as the planner lists them.
    const nodes = [node('c2', ['c1']), node('c1', ['c0']), node('c0'), node('lone')];
    await new BuildDurations(redis).record([
      { name: 'c1', ms: 60_000 },
      { name: 'c2', ms: 60_000 },
    ]);
    const request = submitRunRequestSchema.parse({ expr: 'x', attrs: ['c2'] });
    const last = nodes[0]!;
    const run = await core.runs.submitEvaluated(request, {
      results: [{ attr: 'c2', drvPath: last.drv.path, outputName: 'out', outputPath: last.job.outputs.out! }],
      plan: { nodes, derivationsRead: nodes.length },
    });
    assert.equal(run.total, 4);
    const fields = async (name: string) => {
      const [criticalPath, status] = await redis.hmget(`nixfarm:drv:${hashOf(name)}`, 'criticalPath', 'status');
      return { criticalPath: Number(criticalPath), status };
    };
    // The leaf under the chain: its own 1 s (never built) + 60 s + 60 s; the lone leaf keeps its estimate.
    assert.deepEqual(await fields('c0'), { criticalPath: 121_000, status: 'queued' });
    assert.deepEqual(await fields('lone'), { criticalPath: 1000, status: 'queued' });
    assert.deepEqual(await fields('c1'), { criticalPath: 120_000, status: 'waiting' });
    const job = await core.queues.queue(nodes[2]!.queue).getJob(queuedJobId(hashOf('c0'), 0));
    assert.equal(Number(job?.priority), queuePriority(0, 121_000), 'the waiting job was moved up to its real critical path');
    const lone = await core.queues.queue(nodes[3]!.queue).getJob(queuedJobId(hashOf('lone'), 0));
    assert.ok(Number(lone?.priority) > Number(job?.priority), 'the long chain goes before the lone leaf');
  });
});
