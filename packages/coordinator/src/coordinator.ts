import { mkdir, writeFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { coordinatorConfigSchema, redisKeys, type CoordinatorConfig, type CoordinatorConfigInput, type Logger } from '@nixfarm/shared';
import { CoordinatorNix } from './nix/coordinator-nix.js';
import { BuildPlanner } from './evaluation/build-planner.js';
import { DerivationGraph } from './graph/derivation-graph.js';
import { BuildQueues } from './dispatch/build-queues.js';
import { WorkerDirectory } from './dispatch/worker-directory.js';
import { RunEvents } from './runs/run-events.js';
import { GcRoots } from './runs/gc-roots.js';
import { RunService } from './runs/run-service.js';
import { WorkerEventHandler } from './events/worker-event-handler.js';
import { WorkerEventConsumer } from './events/worker-event-consumer.js';
import { createHttpApi } from './api/http-api.js';
import { EmbeddedRedis } from './redis/embedded-redis.js';
import { StoreEndpoint } from './store-endpoint/store-endpoint.js';
import { LocalBuilder } from './local/local-builder.js';

/** Written to <stateDir>/coordinator.json once the coordinator is ready: how workers, clients and scripts find it. */
export interface CoordinatorAddress {
  httpUrl: string;
  redisUrl: string;
  sshHost: string;
  sshPort: number;
  hostKey: string;
  hostKeyFingerprint: string;
  pid: number;
}

export interface CoordinatorOptions {
  config: CoordinatorConfigInput;
  logger: Logger;
  /** environment for Nix processes (tests set NIX_CONFIG) */
  nixEnv?: Record<string, string>;
}

/**
 * The coordinator: a thin facade that wires the systems (evaluation and
 * planning, the graph, the queues, worker events, the store endpoint, the
 * HTTP API) and owns their start and stop order.
 */
export class Coordinator {
  readonly config: CoordinatorConfig;
  private readonly logger: Logger;
  private embeddedRedis: EmbeddedRedis | undefined;
  private redis: Redis | undefined;
  private consumer: WorkerEventConsumer | undefined;
  private queues: BuildQueues | undefined;
  private http: FastifyInstance | undefined;
  private endpoint: StoreEndpoint | undefined;
  private addressInfo: CoordinatorAddress | undefined;
  private reconciler: NodeJS.Timeout | undefined;

  constructor(private readonly options: CoordinatorOptions) {
    this.config = coordinatorConfigSchema.parse(options.config);
    this.logger = options.logger;
  }

  get address(): CoordinatorAddress {
    if (this.addressInfo === undefined) throw new Error('coordinator not started');
    return this.addressInfo;
  }

  async start(): Promise<CoordinatorAddress> {
    try {
      return await this.startSystems();
    } catch (error) {
      // Whatever did start (the embedded redis-server above all) must not outlive a failed start.
      await this.stop().catch(() => undefined);
      throw error;
    }
  }

  private async startSystems(): Promise<CoordinatorAddress> {
    const { config, logger } = this;
    const stateDir = path.resolve(config.stateDir);
    await mkdir(stateDir, { recursive: true });
    let redisUrl = config.redisUrl;
    if (redisUrl === undefined) {
      this.embeddedRedis = new EmbeddedRedis({ dir: path.join(stateDir, 'redis'), logger });
      redisUrl = await this.embeddedRedis.start();
    }
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
    await redis.connect();
    this.redis = redis;

    const nix = new CoordinatorNix({ logger, nixOptions: config.nixOptions, env: this.options.nixEnv });
    const nixVersion = await nix.version();
    const planner = new BuildPlanner({ nix, logger });
    const graph = new DerivationGraph(redis);
    const queues = new BuildQueues({ redis, logger });
    this.queues = queues;
    const events = new RunEvents(redis);
    const gcRoots = new GcRoots(config.gcRootsDir);
    await mkdir(config.gcRootsDir, { recursive: true });
    const workers = new WorkerDirectory(redis);
    const localBuilder = config.localBuilds
      ? new LocalBuilder({ redis, logger, nixOptions: config.nixOptions, nixEnv: this.options.nixEnv, system: await nix.currentSystem(), maxJobs: config.localMaxJobs })
      : undefined;
    const runs = new RunService({ redis, nix, planner, graph, queues, events, gcRoots, workers, localBuilder, logger });
    const durations = { record: async (name: string, ms: number) => void (await redis.hset(redisKeys.durations, name, String(Math.round(ms)))) };
    const handler = new WorkerEventHandler({ nix, graph, runs, events, gcRoots, durations, logger });

    this.endpoint = new StoreEndpoint({ host: config.sshHost, port: config.sshPort, stateDir, logger: logger.child({ component: 'store-endpoint' }) });
    const ssh = await this.endpoint.start();

    const resumed = await runs.resume();
    // A safety net, like Hydra's periodic queue check: re-queue what the graph says is ready and close runs
    // with nothing left, should an event's follow-up ever have been interrupted. Re-adding an existing job is a no-op.
    this.reconciler = setInterval(() => {
      runs.resume().catch((error: unknown) => logger.warn({ err: error }, 'periodic reconcile failed'));
    }, 60_000);
    this.reconciler.unref();
    this.consumer = new WorkerEventConsumer({ redis: redis.duplicate(), handler, logger });
    await this.consumer.start();

    this.http = createHttpApi({ runs, events, workers, queues, redis, logger, nix });
    await this.http.listen({ host: config.httpHost, port: config.httpPort });
    const httpAddress = this.http.server.address();
    const httpPort = typeof httpAddress === 'object' && httpAddress !== null ? httpAddress.port : config.httpPort;

    this.addressInfo = {
      httpUrl: `http://${config.httpHost}:${httpPort}`,
      redisUrl,
      sshHost: config.sshHost,
      sshPort: ssh.port,
      hostKey: ssh.hostKey,
      hostKeyFingerprint: ssh.fingerprint,
      pid: process.pid,
    };
    const file = path.join(stateDir, 'coordinator.json');
    await writeFile(`${file}.tmp`, JSON.stringify(this.addressInfo, null, 2));
    await rename(`${file}.tmp`, file);
    logger.info({ ...this.addressInfo, nixVersion, resumedRuns: resumed }, 'coordinator ready');
    return this.addressInfo;
  }

  async stop(): Promise<void> {
    if (this.reconciler !== undefined) clearInterval(this.reconciler);
    await this.http?.close();
    await this.consumer?.stop();
    await this.endpoint?.stop();
    await this.queues?.close();
    this.redis?.disconnect();
    await this.embeddedRedis?.stop();
  }
}
