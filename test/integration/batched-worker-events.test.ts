import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { OutputVerifier, PlannedDerivation } from '@nixfarm/coordinator';
import { redisKeys, type BuildFinishedEvent, type BuildStartedEvent } from '@nixfarm/shared';
import { handlerTestBed } from '../harness/handler-test-bed.js';
import { hashOf, plannedDerivation } from '../harness/planned-derivation.js';

/**
 * WorkerEventHandler.handleAll on a real graph in a real redis-server: a batch
 * of reports must end exactly as the same reports applied one by one. The run
 * service is a stand-in that records what is queued and finalized.
 */
function node(name: string, inputs: string[] = []): PlannedDerivation {
  return plannedDerivation({ hash: hashOf(name), name, out: `/nix/store/${hashOf(`${name}out`)}-${name}`, inputs: inputs.map(hashOf) });
}

const TIMINGS = { copyInMs: 1, buildMs: 1, copyOutMs: 1, totalMs: 3 };

function started(n: PlannedDerivation): BuildStartedEvent {
  return { type: 'started', drvPath: n.drv.path, worker: 'w1', jobId: n.hash, attempt: 0, at: Date.now() };
}

function finished(n: PlannedDerivation, outcome: BuildFinishedEvent['outcome']): BuildFinishedEvent {
  return {
    type: 'finished',
    drvPath: n.drv.path,
    worker: 'w1',
    jobId: n.hash,
    attempt: 0,
    outcome,
    outputs: n.job.outputs,
    logTail: [],
    timings: TIMINGS,
    at: Date.now(),
  };
}

describe('worker reports applied in batches', () => {
  const bed = handlerTestBed();

  function setup(nodes: PlannedDerivation[], verifier?: OutputVerifier) {
    return bed.setup(nodes, { ...(verifier === undefined ? {} : { verifier }), retryBaseDelayMs: 10 });
  }

  async function runEvents(): Promise<string[]> {
    const entries = await bed.redis().xrange(redisKeys.runEvents('r1'), '-', '+');
    return entries.map(([, fields]) => {
      const e = JSON.parse(fields[1] ?? '{}') as { type: string; drvPath?: string; status?: string };
      return `${e.type} ${e.drvPath?.slice(44) ?? ''}${e.status ? ` ${e.status}` : ''}`;
    });
  }

  it('applies a start and a finish of the same derivation in one batch, releases dependents once all inputs succeeded, and ends the run', async () => {
    const a = node('a');
    const b = node('b');
    const c = node('c', ['a', 'b']);
    const { graph, handler, queued, finalized, recorded, rootsDir } = await setup([a, b, c]);
    await handler.handleAll([started(a), started(b), finished(a, 'succeeded'), finished(b, 'succeeded')]);
    assert.deepEqual(
      queued.map((r) => r.hash),
      [c.hash],
      'c is released once, with its job',
    );
    assert.equal(queued[0]?.job.drvPath, c.drv.path);
    assert.equal(await graph.status(a.hash), 'succeeded');
    assert.equal((await graph.view(a.hash))?.attempts, 1);
    assert.deepEqual(recorded.sort(), ['a', 'b']);
    assert.deepEqual(
      readdirSync(join(rootsDir, 'runs', 'r1')).sort(),
      [`out-${a.job.outputs.out!.slice(11)}`, `out-${b.job.outputs.out!.slice(11)}`].sort(),
      'outputs held for the run',
    );
    assert.deepEqual(await runEvents(), ['drv-started a.drv', 'drv-started b.drv', 'drv-finished a.drv succeeded', 'drv-finished b.drv succeeded']);
    await handler.handleAll([started(c), finished(c, 'succeeded'), finished(c, 'failed')]);
    assert.equal(await graph.status(c.hash), 'succeeded', 'a duplicate report later in the batch changes nothing');
    assert.deepEqual(finalized, ['r1']);
  });

  it('splits the batch at a report that needs a retry decision and applies the rest in order', async () => {
    const a = node('ra');
    const b = node('rb');
    const c = node('rc', ['rb']);
    const d = node('rd', ['rc']);
    const { graph, handler, queued } = await setup([a, b, c, d]);
    await handler.handleAll([started(a), started(b), finished(a, 'aborted'), finished(b, 'failed')]);
    assert.equal(await graph.status(a.hash), 'queued', 'aborted: queued again');
    assert.deepEqual(
      queued.map((r) => r.hash),
      [a.hash],
    );
    assert.equal(queued[0]?.delayMs, 10);
    assert.equal(await graph.status(b.hash), 'failed');
    assert.equal(await graph.status(d.hash), 'dependency-failed');
    assert.deepEqual((await runEvents()).slice(-3), [
      'drv-finished rb.drv failed',
      'drv-finished rc.drv dependency-failed',
      'drv-finished rd.drv dependency-failed',
    ]);
  });

  it('checks every reported output in one call and treats a success with an invalid output as an infrastructure failure', async () => {
    const a = node('va');
    const b = node('vb');
    const calls: string[][] = [];
    const verifier: OutputVerifier = {
      invalidPaths: async (paths) => {
        calls.push([...paths]);
        return new Set(paths.filter((p) => p === b.job.outputs.out));
      },
    };
    const { graph, handler } = await setup([a, b], verifier);
    await handler.handleAll([started(a), started(b), finished(a, 'succeeded'), finished(b, 'succeeded')]);
    assert.equal(calls.length, 1, 'one store check for the batch');
    assert.deepEqual(calls[0]?.sort(), [a.job.outputs.out, b.job.outputs.out].sort());
    assert.equal(await graph.status(a.hash), 'succeeded');
    assert.equal(await graph.status(b.hash), 'queued', 'not accepted: retried');
  });

  it('registers a run larger than one registration chunk with inputs counted across chunks', async () => {
    // A chain: every node but the first waits for the one before, which may sit in an earlier chunk.
    const chain = Array.from({ length: 12_001 }, (_, i) => {
      const hash = i
        .toString(32)
        .padStart(32, '0')
        .replace(/[eotu]/g, (c) => ({ e: 'w', o: 'x', t: 'y', u: 'z' })[c] ?? c); // Nix's base32 has no e o t u
      const path = `/nix/store/${hash}-chain-${i}.drv`;
      const out = `/nix/store/${hash.replace(/^0/, '1')}-chain-${i}`;
      return {
        ...node('chain'),
        hash,
        drv: { ...node('chain').drv, path, name: `chain-${i}`, outputs: { out } },
        job: { ...node('chain').job, drvPath: path, outputs: { out } },
      };
    });
    chain.forEach((n, i) => {
      n.inputs = i === 0 ? [] : [chain[i - 1]!.hash];
    });
    const { graph, ready } = await setup([...chain].reverse());
    assert.deepEqual(
      ready.map((r) => r.hash),
      [chain[0]!.hash],
    );
    assert.deepEqual(await graph.statusCounts(chain.map((n) => n.hash)), { queued: 1, waiting: 12_000 });
    assert.equal(Number(await bed.redis().hget(redisKeys.run('r1'), 'remaining')), 12_001);
    assert.equal(await bed.redis().scard(redisKeys.runDrvs('r1')), 12_001);
  });

  it('counts statuses as views show them', async () => {
    const a = node('sa');
    const b = node('sb', ['sa']);
    const { graph } = await setup([a, b]);
    await graph.markUnsupported(a.hash, 'no worker');
    const views = await graph.views([a.hash, b.hash]);
    const fromViews: Record<string, number> = {};
    for (const v of views) fromViews[v.status] = (fromViews[v.status] ?? 0) + 1;
    assert.deepEqual(await graph.statusCounts([a.hash, b.hash]), fromViews);
    assert.deepEqual(fromViews, { unsupported: 1, waiting: 1 });
  });
});
