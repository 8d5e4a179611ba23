import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { GcRoots, RunEvents, WorkerEventHandler, type OutputVerifier, type PlannedDerivation, type ReadyDerivation } from '@nixfarm/coordinator';
import { ProbedGraph } from './probed-graph.js';
import { redisKeys, type Logger } from '@nixfarm/shared';
import { privateRedisForSuite } from './private-redis.js';

export interface HandlerBedOptions {
  /** default: every output valid */
  verifier?: OutputVerifier;
  /** default: silent */
  logger?: Logger;
  retryBaseDelayMs?: number;
}

export interface HandlerBed {
  graph: ProbedGraph;
  handler: WorkerEventHandler;
  /** what the handler queued (released dependents, retries) */
  queued: ReadyDerivation[];
  /** runs the handler finalized */
  finalized: string[];
  /** derivation names whose build times were recorded */
  recorded: string[];
  /** what registration made ready */
  ready: ReadyDerivation[];
  /** the GC roots dir of this setup */
  rootsDir: string;
}

/**
 * WorkerEventHandler on a real DerivationGraph in a private redis-server, with
 * a dispatcher and a run finalizer that record what they are asked to queue and finalize: for
 * tests of how reports change the graph. Call inside a describe(); it adds
 * the suite's before/after hooks. Each setup() starts from an empty Redis
 * with run r1 holding the given nodes.
 */
export function handlerTestBed(): { redis: () => Redis; setup(nodes: PlannedDerivation[], options?: HandlerBedOptions): Promise<HandlerBed> } {
  const client = privateRedisForSuite('handlerTestBed');
  const rootsDirs: string[] = [];
  after(() => {
    for (const dir of rootsDirs) rmSync(dir, { recursive: true, force: true });
  });
  return {
    redis: client,
    async setup(nodes, options = {}) {
      const redis = client();
      await redis.flushall();
      const graph = new ProbedGraph(redis);
      const rootsDir = mkdtempSync(join(tmpdir(), 'nixfarm-roots-'));
      rootsDirs.push(rootsDir);
      const gcRoots = new GcRoots(rootsDir);
      await gcRoots.prepareRun('r1');
      await redis.hset(redisKeys.run('r1'), { status: 'running', remaining: '1', failed: '0' });
      const { ready } = await graph.registerRun('r1', nodes, { priority: 0, rebuildFailed: false });
      await redis.hincrby(redisKeys.run('r1'), 'remaining', -1);
      const queued: ReadyDerivation[] = [];
      const finalized: string[] = [];
      const recorded: string[] = [];
      const handler = new WorkerEventHandler({
        verifier: options.verifier ?? { invalidPaths: async () => new Set<string>() },
        graph,
        dispatcher: { dispatch: async (r) => void queued.push(...r), started: () => undefined, handedBack: () => undefined },
        finalizer: { finalize: async (id) => void finalized.push(id) },
        events: new RunEvents(redis),
        gcRoots,
        durations: { record: async (d) => void recorded.push(...d.map((x) => x.name)) },
        logger: options.logger ?? pino({ level: 'silent' }),
        ...(options.retryBaseDelayMs === undefined ? {} : { retryBaseDelayMs: options.retryBaseDelayMs }),
      });
      return { graph, handler, queued, finalized, recorded, ready, rootsDir };
    },
  };
}
