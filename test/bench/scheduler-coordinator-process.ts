/**
 * The coordinator's scheduling core alone, in a process of its own so that
 * its peak RSS is measured without the bench's workers: the real
 * SchedulingCore (graph, queues, runs, worker-event consumer and handler) on
 * the bench's redis-server. The one stand-in is the output check: there is no
 * Nix store behind the synthetic DAG, so every output counts as valid.
 * Started by scheduler-throughput.ts with its config in argv[2]. It reports
 * its memory at each stage (after a GC) and its largest sample in each phase.
 */
import { mkdir } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { AuthorizedKeys, CoordinatorNix, SchedulingCore, type OutputVerifier } from '@nixfarm/coordinator';
import { createLogger } from '@nixfarm/shared';
import { syntheticDag } from './scheduler-dag.js';
import type { CoordinatorProcessConfig, FromCoordinator, MemoryStage, ToCoordinator } from './scheduler-protocol.js';

/** Not real in this bench: a synthetic plan has no store paths to check. */
const everythingValid: OutputVerifier = { invalidPaths: async () => new Set<string>() };
const SAMPLE_MS = 250;

function send(message: FromCoordinator): void {
  process.send?.(message);
}

function sample(stage: string, peak: boolean): MemoryStage {
  const m = process.memoryUsage();
  return { stage, peak, rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external };
}

/** Memory after a full GC (when the process runs with --expose-gc). */
function settled(stage: string): MemoryStage {
  (globalThis as { gc?: () => void }).gc?.();
  return sample(stage, false);
}

/** The largest heap sample of the current phase. */
class PeakSampler {
  private peak: MemoryStage | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(private phase: string) {
    this.timer = setInterval(() => this.take(), SAMPLE_MS);
    this.timer.unref();
  }

  private take(): void {
    const s = sample(this.phase, true);
    if (this.peak === undefined || s.heapUsedBytes + s.externalBytes > this.peak.heapUsedBytes + this.peak.externalBytes) this.peak = s;
  }

  /** The peak of the phase that ends, and a new phase from now on. */
  next(phase: string): MemoryStage | undefined {
    this.take();
    const out = this.peak;
    this.peak = undefined;
    this.phase = phase;
    return out;
  }
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
  const stages: MemoryStage[] = [settled('core started')];

  const dagStarted = performance.now();
  let dag: ReturnType<typeof syntheticDag> | undefined = syntheticDag({ size: config.size, layers: config.layers, seed: config.seed });
  const dagMs = performance.now() - dagStarted;
  stages.push(settled('plan in memory (the evaluation output)'));
  const peaks = new PeakSampler('submit');
  send({ type: 'ready', nodes: dag.evaluated.plan.nodes.length, edges: dag.edges, dagMs });

  process.on('message', (message: ToCoordinator) => {
    if (message.type === 'submit' && dag !== undefined) {
      const { request, evaluated } = dag;
      dag = undefined; // the run owns the plan now; nothing else holds it
      const started = performance.now();
      core.runs
        .submitEvaluated(request, evaluated)
        .then((run) => {
          const submitMs = performance.now() - started;
          const peak = peaks.next('run after submit');
          if (peak !== undefined) stages.push(peak);
          stages.push(settled('submitted (plan released)'));
          send({ type: 'submitted', runId: run.id, submitMs });
        })
        .catch((error: unknown) => send({ type: 'failed', error: String((error as Error).stack ?? error) }));
    } else if (message.type === 'memory') {
      const peak = peaks.next('idle');
      if (peak !== undefined) stages.push(peak);
      stages.push(settled('run finished'));
      for (const stage of stages.splice(0)) send({ type: 'memory', stage });
      send({ type: 'memory-done' });
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
