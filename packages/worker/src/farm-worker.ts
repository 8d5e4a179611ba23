import { mkdir, rm } from 'node:fs/promises';
import { execa } from 'execa';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { connectRedis, localStorePool, parseDerivation, redisKeys, workerConfigSchema, type Logger, type ServePool, type WorkerConfig, type WorkerConfigInput, type WorkerInfo, type RedisWaitHooks } from '@nixfarm/shared';
import { WorkerNix } from './worker-nix.js';
import { StoreCopier } from './store-copier.js';
import { ServeBuilder } from './serve-builder.js';
import { coordinatorStorePool } from './coordinator-store-pool.js';
import { WorkerEventPublisher } from './worker-event-publisher.js';
import { JobRunner } from './job-runner.js';
import { BuildExecutor } from './build-executor.js';
import { narHashesIn } from './output-hashes.js';
import { JobFetcher } from './job-fetcher.js';
import { PlacementGate } from './placement-gate.js';
import { WorkerHeartbeat } from './worker-heartbeat.js';
import { loadOrCreateWorkerKey, writeSshClientConfig } from './ssh-identity.js';
import { probeCoordinator } from './coordinator-probe.js';

export interface FarmWorkerOptions {
  config: WorkerConfigInput;
  logger: Logger;
  /** environment for Nix processes */
  nixEnv?: Record<string, string>;
  lockDurationMs?: number;
  /** stop the wait for an unreachable Redis at start, and hear about it */
  redisWait?: RedisWaitHooks;
}

/**
 * A worker: advertises what it can build, pulls jobs it may take under Nix's
 * rule, builds at most max-jobs at once, and reports each result.
 */
export class FarmWorker {
  readonly config: WorkerConfig;
  private readonly logger: Logger;
  private redis: Redis | undefined;
  private fetcher: JobFetcher | undefined;
  private heartbeat: WorkerHeartbeat | undefined;
  private readonly running = new Set<Promise<void>>();
  /** running builds by derivation hash, so the coordinator can stop one (a cancelled run) */
  private readonly cancellers = new Map<string, AbortController>();
  private cancelSubscriber: Redis | undefined;
  private loop: Promise<void> | undefined;
  private stopping = false;
  private slotFreed: (() => void) | undefined;
  private pools: ServePool[] = [];
  private ssh: { configPath: string; hostAlias: string; controlDir: string | undefined; stateDir: string } | undefined;

  constructor(private readonly options: FarmWorkerOptions) {
    this.config = workerConfigSchema.parse(options.config);
    this.logger = options.logger;
  }

  get runningJobs(): number {
    return this.running.size;
  }

  async start(): Promise<void> {
    const { config, logger } = this;
    const stateDir = path.resolve(config.stateDir);
    await mkdir(stateDir, { recursive: true });
    const identity = await loadOrCreateWorkerKey(stateDir);
    const ssh = await writeSshClientConfig({
      stateDir,
      host: config.coordinatorHost,
      port: config.coordinatorPort,
      hostKeyLine: config.coordinatorHostKey,
      privateKeyPath: identity.privateKeyPath,
    });
    this.ssh = { configPath: ssh.configPath, hostAlias: ssh.hostAlias, controlDir: ssh.controlDir, stateDir };
    // Fail at start, with the fingerprint and the command to authorise it, rather than on every build.
    await probeCoordinator({
      host: config.coordinatorHost,
      port: config.coordinatorPort,
      hostKeyLine: config.coordinatorHostKey,
      privateKeyPath: identity.privateKeyPath,
      logger,
      timeoutMs: 10_000,
    });

    // Nix refuses a build whose required features its own system-features lack; what the worker advertises, its Nix must accept.
    const advertised = [...new Set([...config.supportedFeatures, ...config.mandatoryFeatures])];
    const nixOptions: Array<readonly [string, string]> = [...config.nixOptions];
    if (advertised.length > 0) nixOptions.push(['extra-system-features', advertised.join(' ')]);
    const nix = new WorkerNix({ env: this.options.nixEnv });
    const nixVersion = await nix.version();
    // Builds hold a local session each, and copies run beside them: one more than max-jobs of each kind stays open.
    const local = localStorePool({ nixOptions, env: this.options.nixEnv, write: true, maxIdle: config.maxJobs + 1, peer: `the store of worker ${config.name}` });
    const coordinator = coordinatorStorePool({ sshConfigPath: ssh.configPath, hostAlias: ssh.hostAlias, maxIdle: config.maxJobs + 1, env: this.options.nixEnv });
    this.pools = [local, coordinator];
    const redis = await connectRedis({ url: config.redisUrl, logger, ...this.options.redisWait, redisOptions: { maxRetriesPerRequest: null } });
    this.redis = redis;
    const lockDurationMs = this.options.lockDurationMs ?? config.lockSeconds * 1000;
    const copier = new StoreCopier({ local, coordinator, logger });
    const builder = new ServeBuilder({
      store: local,
      readDerivation: async (drvPath) => parseDerivation(drvPath, (await copier.readCoordinatorFile(drvPath)).toString('utf8')),
    });
    const executor = new BuildExecutor({ workerName: config.name, builder, mover: copier, publisher: new WorkerEventPublisher(redis), logger, outputHashes: narHashesIn(local) });
    const runner = new JobRunner({ executor, logger, lockDurationMs });
    const capabilities = { systems: config.systems, supportedFeatures: config.supportedFeatures, mandatoryFeatures: config.mandatoryFeatures };
    const gate = new PlacementGate({
      redis,
      self: () => ({ name: config.name, running: this.running.size, maxJobs: config.maxJobs, speedFactor: config.speedFactor }),
    });
    this.fetcher = new JobFetcher({ redis, subscriber: redis.duplicate(), capabilities, workerName: config.name, logger, lockDurationMs, gate });
    const startedAt = Date.now();
    const info = (): WorkerInfo => ({
      name: config.name,
      ...capabilities,
      maxJobs: config.maxJobs,
      speedFactor: config.speedFactor,
      running: this.running.size,
      heartbeatAt: Date.now(),
      startedAt,
      host: os.hostname(),
      publicKeyFingerprint: identity.fingerprint,
      nixVersion,
    });
    this.heartbeat = new WorkerHeartbeat(redis, info);
    await this.heartbeat.start();
    this.cancelSubscriber = redis.duplicate();
    await this.cancelSubscriber.subscribe(redisKeys.cancelBuilds);
    this.cancelSubscriber.on('message', (_channel: string, hash: string) => {
      const canceller = this.cancellers.get(hash);
      if (canceller === undefined) return;
      logger.info({ hash }, 'build cancelled by the coordinator; stopping it');
      canceller.abort();
    });
    await this.fetcher.start();
    logger.info({ worker: config.name, systems: config.systems, maxJobs: config.maxJobs, speedFactor: config.speedFactor, nixVersion }, 'worker ready');
    this.loop = this.fetchLoop(runner);
  }

  private async fetchLoop(runner: JobRunner): Promise<void> {
    const fetcher = this.fetcher!;
    while (!this.stopping) {
      if (this.running.size >= this.config.maxJobs) {
        await new Promise<void>((resolve) => (this.slotFreed = resolve));
        continue;
      }
      let fetched;
      try {
        fetched = await fetcher.fetch();
      } catch (error) {
        this.logger.warn({ err: error }, 'fetching jobs failed; retrying');
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (fetched === undefined) {
        await fetcher.idle();
        await fetcher.refreshQueues().catch(() => undefined);
        continue;
      }
      const hash = String(fetched.job.id).split('.')[0]!;
      const canceller = new AbortController();
      this.cancellers.set(hash, canceller);
      const task = runner
        .run(fetched.job, fetched.token, canceller.signal)
        .catch((error: unknown) => this.logger.error({ err: error, jobId: fetched.job.id }, 'job failed to report'))
        .finally(() => {
          this.running.delete(task);
          if (this.cancellers.get(hash) === canceller) this.cancellers.delete(hash);
          void this.heartbeat?.beat().catch(() => undefined);
          const freed = this.slotFreed;
          this.slotFreed = undefined;
          freed?.();
        });
      this.running.add(task);
      void this.heartbeat?.beat().catch(() => undefined);
    }
  }

  /** Stops taking jobs, lets running builds finish, then leaves. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.fetcher?.wakeUp();
    this.slotFreed?.();
    await this.loop;
    await Promise.allSettled([...this.running]);
    await this.fetcher?.close();
    this.cancelSubscriber?.disconnect();
    await this.heartbeat?.stop().catch(() => undefined);
    this.redis?.disconnect();
    await Promise.all(this.pools.map((p) => p.close()));
    await this.closeSshMaster();
  }

  /** The multiplexed SSH connection outlives its users by ControlPersist; a leaving worker closes it now. */
  private async closeSshMaster(): Promise<void> {
    const ssh = this.ssh;
    if (ssh?.controlDir === undefined) return;
    await execa('ssh', ['-F', ssh.configPath, '-O', 'exit', ssh.hostAlias], { reject: false, stdin: 'ignore', timeout: 5000 });
    // A fallback socket dir outside the state dir (short path for the socket-length limit) is ours to remove.
    if (!ssh.controlDir.startsWith(ssh.stateDir)) await rm(ssh.controlDir, { recursive: true, force: true });
  }
}
