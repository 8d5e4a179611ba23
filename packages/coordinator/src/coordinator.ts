import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import {
  connectRedis,
  probeRedisPermissions,
  redactRedisUrl,
  redisUserOf,
  coordinatorConfigSchema,
  hasRedisTlsFiles,
  localStorePool,
  probeNixBuild,
  RedisTlsSettingError,
  writeFileAtomic,
  ReportSigner,
  type ApiScope,
  type CoordinatorConfig,
  type CoordinatorConfigInput,
  type Logger,
  type RedisWaitHooks,
  type ServePool,
} from '@nixfarm/shared';
import { CoordinatorNix } from './nix/coordinator-nix.js';
import { SchedulingCore } from './coordinator-systems.js';
import { createHttpApi } from './api/http-api.js';
import { checkDiffHookProgram } from './checks/diff-hook.js';
import { EmbeddedRedis } from './redis/embedded-redis.js';
import { StoreEndpoint } from './store-endpoint/store-endpoint.js';
import { AuthorizedKeys } from './store-endpoint/authorized-keys.js';
import { loadOrCreateHostKey } from './store-endpoint/host-key.js';
import { COORDINATOR_NIX, LocalBuilder, NO_LOCAL_BUILDS_FIX } from './local/local-builder.js';
import { BuildLogStore, DEFAULT_NIX_LOG_DIR } from './logs/build-log-store.js';
import { BuildLogService } from './logs/build-log-service.js';
import { SignedLogEntries } from './logs/signed-log-entries.js';
import { ApiTokens } from './api/api-tokens.js';
import { checkUploadTarget, parseUploadTarget } from './uploads/upload-target.js';
import { uploadStagingDir } from './uploads/upload-queue.js';
import { loadOrCreateSigningKey } from './cache/signing-key.js';
import { BinaryCache } from './cache/binary-cache.js';
import { CACHE_PREFIX } from './cache/cache-routes.js';
import { FarmStatusCollector } from './metrics/farm-status-collector.js';
import { FarmHistoryStore } from './history/farm-history-store.js';
import { FarmHistorySampler } from './history/farm-history-sampler.js';

/** Written to <stateDir>/coordinator.json once the coordinator is ready: how workers, clients and scripts find it. */
export interface CoordinatorAddress {
  httpUrl: string;
  redisUrl: string;
  /** the CA of a rediss:// Redis, when one was given: `worker --join` takes it with the URL */
  redisCaFile?: string;
  sshHost: string;
  sshPort: number;
  hostKey: string;
  hostKeyFingerprint: string;
  pid: number;
  /** where the API's bearer tokens are (never the tokens themselves: this file is world-readable) */
  apiTokenFiles: Record<ApiScope, string>;
  /** the public half of the signing key, as nix.conf's trusted-public-keys takes it */
  cacheKey: string;
  /** the binary cache's substituter URL */
  cacheUrl: string;
}

export interface CoordinatorOptions {
  config: CoordinatorConfigInput;
  logger: Logger;
  /** environment for Nix processes (tests set NIX_CONFIG) */
  nixEnv?: Record<string, string>;
  /** stop the wait for an unreachable Redis at start, and hear about it */
  redisWait?: RedisWaitHooks;
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
  private core: SchedulingCore | undefined;
  private http: FastifyInstance | undefined;
  private endpoint: StoreEndpoint | undefined;
  private history: FarmHistorySampler | undefined;
  /** serve sessions with the coordinator's own store (validity queries, local builds) */
  private storeSessions: Array<{ close(): Promise<void> }> = [];
  private addressInfo: CoordinatorAddress | undefined;

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
    if (config.redisUrl === undefined && hasRedisTlsFiles(config))
      throw new RedisTlsSettingError(
        '--redis-ca, --redis-cert and --redis-key are for an external Redis over TLS (--redis rediss://host:port); without --redis the coordinator starts its own redis-server, plain on loopback',
      );
    const stateDir = path.resolve(config.stateDir);
    await mkdir(stateDir, { recursive: true });
    // First: a token file others can read stops the start before anything else is running.
    const { tokens, files: apiTokenFiles } = await ApiTokens.loadOrCreate(stateDir);
    // So does a signing key others can read, or one that is not a key: before Redis is touched.
    const signingKey = await loadOrCreateSigningKey(stateDir, config.signingKeyFile);
    // A --push-to cache that cannot be written is refused now, before any build would have to wait on it.
    const pushTo = config.pushTo.map(parseUploadTarget);
    for (const target of pushTo) await checkUploadTarget(target);
    // A diff hook that cannot run is named now, not at the first difference a check finds.
    if (config.diffHook !== undefined)
      await checkDiffHookProgram(config.diffHook, this.options.nixEnv === undefined ? process.env : { ...process.env, ...this.options.nixEnv });
    const localStore = config.localBuilds ? await this.probedLocalStore() : undefined;
    let redisUrl = config.redisUrl;
    if (redisUrl === undefined) {
      this.embeddedRedis = new EmbeddedRedis({ dir: path.join(stateDir, 'redis'), logger });
      redisUrl = await this.embeddedRedis.start();
    }
    const redis = await connectRedis({ url: redisUrl, logger, ...this.options.redisWait, redisOptions: { maxRetriesPerRequest: null }, tls: config });
    this.redis = redis;
    // A user that lacks a command the coordinator needs is named now, once, rather than failing runs later.
    await probeRedisPermissions(redis, 'coordinator', redisUserOf(redisUrl)).catch(async (error: unknown) => {
      redis.disconnect();
      await this.embeddedRedis?.stop();
      throw error;
    });

    // The host key also signs the local builder's reports: they travel through the same Redis stream as any worker's.
    const reportSigner = ReportSigner.fromPrivateKey((await loadOrCreateHostKey(stateDir)).privateKey);
    const authorizedKeys = new AuthorizedKeys(stateDir, { logger: logger.child({ component: 'store-endpoint' }) });
    const nix = new CoordinatorNix({ logger, nixOptions: config.nixOptions, env: this.options.nixEnv });
    const nixVersion = await nix.version();
    this.storeSessions.push(nix);
    const localBuilder =
      localStore === undefined
        ? undefined
        : new LocalBuilder({
            redis,
            logger,
            signer: reportSigner,
            store: localStore,
            system: await nix.currentSystem(),
            maxJobs: config.localMaxJobs,
            readDerivation: (drvPath) => nix.readDerivation(drvPath),
          });
    // Nix's own log dir, so `nix-store --read-log` on this machine shows what workers built.
    const logDir = config.logDir ?? this.options.nixEnv?.NIX_LOG_DIR ?? process.env.NIX_LOG_DIR ?? DEFAULT_NIX_LOG_DIR;
    const logLogger = logger.child({ component: 'build-logs' });
    const entries = new SignedLogEntries({
      redis,
      keys: authorizedKeys,
      own: reportSigner.reportKey,
      logger: logLogger,
      // Called only once the core below exists: when a build's log is stored.
      count: (reason) => core.metrics.reportRejected(reason),
    });
    const logs = new BuildLogService({ redis, store: new BuildLogStore({ logDir }), logger: logLogger, entries });
    const core = new SchedulingCore({
      redis,
      logger,
      nix,
      verifier: nix,
      gcRootsDir: config.gcRootsDir,
      localBuilder,
      logs,
      signing: { key: signingKey, nix },
      reports: {
        keys: authorizedKeys,
        own: reportSigner.reportKey,
        onRevoked: (fingerprints) => this.endpoint?.disconnectKeys(fingerprints),
      },
      imagePublish: { attempts: config.imagePublishAttempts, backoffMs: config.imagePublishBackoffMs },
      evaluatorNix: { nixOptions: config.nixOptions, ...(this.options.nixEnv === undefined ? {} : { env: this.options.nixEnv }) },
      uploads: { targets: pushTo, concurrency: config.uploadConcurrency, stagingDir: uploadStagingDir(stateDir) },
      checks: {
        fraction: config.checkFraction,
        maxNarBytes: config.checkMaxNarBytes,
        dir: path.join(stateDir, 'checks'),
        ...(config.diffHook === undefined ? {} : { diffHook: config.diffHook }),
      },
    });
    this.core = core;

    this.endpoint = new StoreEndpoint({
      host: config.sshHost,
      port: config.sshPort,
      stateDir,
      authorizedKeys,
      logger: logger.child({ component: 'store-endpoint' }),
    });
    const ssh = await this.endpoint.start();

    const resumed = await core.start();

    // One farm snapshot for the API, /metrics, the dashboard and the history they chart.
    const status = new FarmStatusCollector({
      redis,
      queues: core.queues,
      workers: core.workers,
      queueWaits: core.metrics.queueWaits,
      runs: core.runs,
      logger,
    });
    const intervalSeconds = config.historyIntervalSeconds;
    const historyStore = new FarmHistoryStore({ redis, intervalSeconds });
    this.history = new FarmHistorySampler({
      status,
      finishedTotals: () => core.metrics.finishedByStatus(),
      store: historyStore,
      intervalSeconds,
      logger: logger.child({ component: 'history' }),
    });
    this.history.start();

    this.http = createHttpApi({
      runs: core.runs,
      events: core.events,
      workers: core.workers,
      queues: core.queues,
      redis,
      logger,
      nix,
      metrics: core.metrics,
      logs,
      tokens,
      graph: core.graph,
      fairShare: core.dispatcher,
      checks: { service: core.checks, ...(core.mismatches === undefined ? {} : { reports: core.mismatches }) },
      ...(core.uploads === undefined ? {} : { uploads: core.uploads }),
      cache: new BinaryCache({ redis, nix, logger, metrics: core.metrics }),
      publicCache: config.publicCache,
      status,
      history: { store: historyStore, intervalSeconds },
    });
    await this.http.listen({ host: config.httpHost, port: config.httpPort });
    const httpAddress = this.http.server.address();
    const httpPort = typeof httpAddress === 'object' && httpAddress !== null ? httpAddress.port : config.httpPort;

    this.addressInfo = {
      httpUrl: `http://${config.httpHost}:${httpPort}`,
      redisUrl,
      ...(config.redisCaFile === undefined ? {} : { redisCaFile: path.resolve(config.redisCaFile) }),
      sshHost: config.sshHost,
      sshPort: ssh.port,
      hostKey: ssh.hostKey,
      hostKeyFingerprint: ssh.fingerprint,
      pid: process.pid,
      apiTokenFiles,
      cacheKey: signingKey.publicKey,
      cacheUrl: `http://${config.httpHost}:${httpPort}${CACHE_PREFIX}`,
    };
    const file = path.join(stateDir, 'coordinator.json');
    // coordinator.json keeps the Redis URL whole, for `worker --join` on this machine: with a password in it, only its owner may read it.
    const withPassword = redactRedisUrl(redisUrl) !== redisUrl;
    await writeFileAtomic(file, JSON.stringify(this.addressInfo, null, 2), withPassword ? 0o600 : undefined);
    // The log shows the Redis URL without its password.
    logger.info(
      { ...this.addressInfo, redisUrl: redactRedisUrl(redisUrl), nixVersion, resumedRuns: resumed, logDir, pushTo: config.pushTo },
      'coordinator ready',
    );
    return this.addressInfo;
  }

  /**
   * The sessions local builds use, once a trivial build through them
   * passed. Runs before Redis is touched: a coordinator whose Nix cannot
   * build would end every local build aborted, so it refuses to start
   * (NixSetupError) and leaves every queued build and run as it was.
   */
  private async probedLocalStore(): Promise<ServePool> {
    const { config, logger } = this;
    const store = localStorePool({
      nixOptions: config.nixOptions,
      env: this.options.nixEnv,
      write: true,
      maxIdle: config.localMaxJobs,
      peer: "the coordinator's store",
    });
    this.storeSessions.push(store);
    const probed = await probeNixBuild({
      store,
      nix: COORDINATOR_NIX,
      env: this.options.nixEnv,
      nixOptions: config.nixOptions,
      alternative: NO_LOCAL_BUILDS_FIX,
      logger,
    });
    logger.info({ ms: probed.ms }, "the coordinator's Nix builds (a trivial test build passed)");
    return store;
  }

  async stop(): Promise<void> {
    await this.history?.stop();
    await this.http?.close();
    await this.core?.stop();
    await this.endpoint?.stop();
    await Promise.all(this.storeSessions.map((s) => s.close()));
    this.redis?.disconnect();
    await this.embeddedRedis?.stop();
  }
}
