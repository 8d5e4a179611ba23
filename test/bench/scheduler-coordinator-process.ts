/**
 * The coordinator's scheduling core alone, in a process of its own so that
 * its peak RSS is measured without the bench's workers: the real
 * SchedulingCore (graph, queues, runs, worker-event consumer and handler) on
 * the bench's redis-server. The one stand-in is the output check: there is no
 * Nix store behind the synthetic DAG, so every output counts as valid.
 * Started by scheduler-throughput.ts with its config in argv[2].
 */
import { mkdir } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { AuthorizedKeys, CoordinatorNix, SchedulingCore, type OutputVerifier } from '@nixfarm/coordinator';
import { createLogger } from '@nixfarm/shared';
import { syntheticDag } from './scheduler-dag.js';
import type { CoordinatorProcessConfig, FromCoordinator, ToCoordinator } from './scheduler-protocol.js';

/** Not real in this bench: a synthetic plan has no store paths to check. */
const everythingValid: OutputVerifier = { invalidPaths: async () => new Set<string>() };

function send(message: FromCoordinator): void {
  process.send?.(message);
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as CoordinatorProcessConfig;
  const logger = createLogger({ name: 'bench-coordinator', level: process.env.NIXFARM_LOG_LEVEL === undefined ? 'warn' : undefined });
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
  await redis.connect();
  await mkdir(config.gcRootsDir, { recursive: true });
  // Never called: nothing here evaluates. The core needs it for submit(), which the bench bypasses.
  const nix = new CoordinatorNix({ logger, nixOptions: [] });
  const reports = { keys: new AuthorizedKeys(config.stateDir) };
  const core = new SchedulingCore({ redis, logger, nix, verifier: everythingValid, gcRootsDir: config.gcRootsDir, reports });
  await core.start();

  const dagStarted = performance.now();
  let dag: ReturnType<typeof syntheticDag> | undefined = syntheticDag({ size: config.size, layers: config.layers, seed: config.seed });
  send({ type: 'ready', nodes: dag.evaluated.plan.nodes.length, edges: dag.edges, dagMs: performance.now() - dagStarted });

  process.on('message', (message: ToCoordinator) => {
    if (message.type === 'submit' && dag !== undefined) {
      const { request, evaluated } = dag;
      dag = undefined; // the run owns the plan now; nothing else holds it
      const started = performance.now();
      core.runs
        .submitEvaluated(request, evaluated)
        .then((run) => send({ type: 'submitted', runId: run.id, submitMs: performance.now() - started }))
        .catch((error: unknown) => send({ type: 'failed', error: String((error as Error).stack ?? error) }));
    } else if (message.type === 'stop') {
      void core.stop().finally(() => {
        redis.disconnect();
        // Exit now rather than when the last handle closes; --cpu-prof writes its profile on the way out.
        process.exit(0);
      });
    }
  });
}

main().catch((error: unknown) => {
  send({ type: 'failed', error: String((error as Error).stack ?? error) });
  process.exitCode = 1;
  process.disconnect?.();
});
