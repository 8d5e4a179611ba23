import { mkdir, rm } from 'node:fs/promises';
import { execa } from 'execa';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { BuildExecutor, ServeBuilder, narHashesIn } from '@nixfarm/build';
import {
  STORE_DIR,
  ReportSigner,
  connectRedis,
  hashOfQueuedJobId,
  localStorePool,
  nixExporter,
  noPermissionIn,
  parseDerivation,
  probeNixBuild,
  probeRedisPermissions,
  redisKeys,
  redisUserOf,
  workerConfigSchema,
  type Logger,
  type NixfarmError,
  type NixSetupError,
  type RedisWaitHooks,
  type ServePool,
  type WorkerConfig,
  type WorkerConfigInput,
  type WorkerInfo,
} from '@nixfarm/shared';
import { WorkerNix } from './worker-nix.js';
import { StoreCopier } from './store-copier.js';
import { coordinatorStorePool } from './coordinator-store-pool.js';
import { HandBackPublisher, HandBackRegistry } from './hand-back.js';
import { DiskFloor } from './disk-floor.js';
import { JobRunner } from './job-runner.js';
import { CheckExecutor } from './check-executor.js';
import { JobFetcher } from './job-fetcher.js';
import { FetchWatchdog } from './fetch-watchdog.js';
import { BuildSlots } from './build-slots.js';
import { PlacementGate } from './placement-gate.js';
import { WorkerHeartbeat } from './worker-heartbeat.js';
import { loadOrCreateWorkerKey, writeSshClientConfig } from './ssh-identity.js';
import { probeCoordinator } from './coordinator-probe.js';
import { NixSetupPause } from './nix-setup-pause.js';

export interface FarmWorkerOptions {
  config: WorkerConfigInput;
  logger: Logger;
  /** environment for Nix processes */
  nixEnv?: Record<string, string>;
  lockDurationMs?: number;
  /** stop the wait for an unreachable Redis at start, and hear about it */
  redisWait?: RedisWaitHooks;
  /** where the free-space floor is measured; default the Nix store */
  storeDir?: string;
  /** how often a worker paused because its Nix cannot build tests again whether it does (ms); default 30 s */
  nixSetupRecheckMs?: number;
  /** the worker stopped taking builds for a fault no retry fixes (its Redis user lost a permission): the caller should stop it and exit */
  onFatal?: (error: NixfarmError) => void;
}

export interface DrainOptions {
  /** how long running builds may go on before they are handed back; default the config's drainSeconds */
  timeoutMs?: number;
  /** settles when the running builds are to be handed back at once (a second SIGTERM) */
  handBackNow?: Promise<unknown>;
  /** told once the worker takes no new builds: how many it waits for, and until when */
  onDraining?: (state: { running: number; deadline: number }) => void;
}

export interface DrainResult {
  /** builds that ran when the drain began */
  waitedFor: number;
  /** of those, builds given back to their queue unfinished (the rest ended and were reported as usual) */
  handedBack: number;
  /** why running builds were handed back: the drain timeout ran out, or the worker was told to leave now */
  handBackCause?: 'timeout' | 'told';
}

interface RunningBuild {
  jobId: string;
  canceller: AbortController;
  /** a sampled reproducibility check: given back when real work waits and the slots are full */
  background: boolean;
  startedAt: number;
  /** asked to yield to real work: its hand-back is under way */
  yielding?: boolean;
}

/**
 * A worker: advertises what it can build, pulls jobs it may take under Nix's
 * rule, builds at most max-jobs at once, and reports each result.
 */
export class FarmWorker {
  readonly config: WorkerConfig;
  private readonly logger: Logger;
  /** who the worker is in Redis, for permission messages */
  private readonly redisUser: string;
  private redis: Redis | undefined;
  private fetcher: JobFetcher | undefined;
  private watchdog: FetchWatchdog | undefined;
  private heartbeat: WorkerHeartbeat | undefined;
  private readonly slots: BuildSlots;
  /** running builds by derivation hash, so the coordinator can stop one (a cancelled run) and a leaving worker can hand them back */
  private readonly builds = new Map<string, RunningBuild>();
  private readonly handBacks = new HandBackRegistry();
  private readonly diskFloor: DiskFloor;
  /** set once start() has probed Nix: pauses the worker when a build finds that its Nix cannot build */
  private nixSetup: NixSetupPause | undefined;
  /** leaving: takes no new builds, advertises it */
  private draining = false;
  /** why this worker takes no builds: the coordinator revoked its key (its reports no longer count) */
  private revoked: string | undefined;
  private cancelSubscriber: Redis | undefined;
  private loop: Promise<void> | undefined;
  private stopping = false;
  private pools: ServePool[] = [];
  private ssh: { configPath: string; hostAlias: string; controlDir: string | undefined; stateDir: string } | undefined;

  constructor(private readonly options: FarmWorkerOptions) {
    this.config = workerConfigSchema.parse(options.config);
    this.redisUser = redisUserOf(this.config.redisUrl);
    this.logger = options.logger;
    this.diskFloor = new DiskFloor({
      path: options.storeDir ?? STORE_DIR,
      minFreeBytes: this.config.minFreeDiskMiB * 1024 * 1024,
      setting: '--min-free-disk',
      logger: this.logger,
    });
    this.slots = new BuildSlots({ maxJobs: this.config.maxJobs, advertise: async () => this.heartbeat?.beat() });
  }

  async start(): Promise<void> {
    const { config, logger } = this;
    const stateDir = path.resolve(config.stateDir);
    await mkdir(stateDir, { recursive: true });

    // Nix refuses a build whose required features its own system-features lack; what the worker advertises, its Nix must accept.
    const advertised = [...new Set([...config.supportedFeatures, ...config.mandatoryFeatures])];
    const nixOptions: Array<readonly [string, string]> = [...config.nixOptions];
    if (advertised.length > 0) nixOptions.push(['extra-system-features', advertised.join(' ')]);
    // Reproducibility checks run `nix-store --realise --check` with the same options and log limit as the serve sessions' builds.
    const nix = new WorkerNix({ env: this.options.nixEnv, nixOptions, maxLogBytes: config.maxLogSize });
    const nixVersion = await nix.version();
    // Builds hold a local session each, and copies run beside them: one more than max-jobs of each kind stays open.
    // Sessions in their own process groups: the SIGTERM or Ctrl-C that starts a drain must not stop the builds it waits for.
    const local = localStorePool({
      nixOptions,
      env: this.options.nixEnv,
      write: true,
      maxIdle: config.maxJobs + 1,
      peer: `the store of worker ${config.name}`,
      ownProcessGroup: true,
    });
    this.pools = [local];
    // Before anything is fetched, or even connected: a worker whose Nix cannot build would only fail every build it took.
    const nixName = `worker ${config.name}'s Nix`;
    const probe = () => probeNixBuild({ store: local, nix: nixName, env: this.options.nixEnv, nixOptions, logger });
    const probed = await probe();
    logger.info({ ms: probed.ms }, 'Nix builds here (a trivial test build passed)');
    this.nixSetup = new NixSetupPause({ logger, probe, recheckMs: this.options.nixSetupRecheckMs ?? 30_000, onResume: () => local.discardIdle() });

    const identity = await loadOrCreateWorkerKey(stateDir);
    const ssh = await writeSshClientConfig({
      stateDir,
      host: config.coordinatorHost,
      port: config.coordinatorPort,
      hostKeyLine: config.coordinatorHostKey,
      privateKeyPath: identity.privateKeyPath,
      compression: config.copyCompression,
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

    const coordinator = coordinatorStorePool({
      sshConfigPath: ssh.configPath,
      hostAlias: ssh.hostAlias,
      maxIdle: config.maxJobs + 1,
      env: this.options.nixEnv,
    });
    this.pools = [local, coordinator];
    let redis: Redis;
    try {
      redis = await connectRedis({ url: config.redisUrl, logger, ...this.options.redisWait, redisOptions: { maxRetriesPerRequest: null }, tls: config });
      this.redis = redis;
      // A user that lacks a command the worker needs is named now, once, rather than failing builds (or BullMQ's scripts) later.
      await probeRedisPermissions(redis, 'worker', this.redisUser);
    } catch (error) {
      // Refused: close what start opened (store sessions, SSH, Redis), so the process ends with the one message.
      await this.stop().catch(() => undefined);
      throw error;
    }
    const lockDurationMs = this.options.lockDurationMs ?? config.lockSeconds * 1000;
    const copier = new StoreCopier({ local, coordinator, logger, exporter: nixExporter({ nixOptions, env: this.options.nixEnv }) });
    // One limit for both: Nix ends the build past it (log-limit-exceeded), and the streamed log is cut there, so the stored log never holds more.
    const builder = new ServeBuilder({
      store: local,
      nix: nixName,
      maxLogBytes: config.maxLogSize,
      readDerivation: async (drvPath) => parseDerivation(drvPath, (await copier.readCoordinatorFile(drvPath)).toString('utf8')),
    });
    // One session for the worker's reports and log batches, all posted on this one connection (sequence order = stream order).
    const signer = ReportSigner.fromPrivateKey(identity.privateKey);
    const publisher = new HandBackPublisher(redis, signer, this.handBacks);
    const executor = new BuildExecutor({
      workerName: config.name,
      builder,
      mover: copier,
      publisher,
      logger,
      outputHashes: narHashesIn(local),
      logStream: { redis, signer, maxBytes: config.maxLogSize },
      beforeReport: (jobId) => this.slots.releasing(jobId),
      onNixSetupError: (error, build) => this.nixSetupFailed(error, build.jobId),
    });
    const checks = new CheckExecutor({
      workerName: config.name,
      nix,
      mover: copier,
      publisher,
      redis,
      logger,
      beforeReport: (jobId) => this.slots.releasing(jobId),
      onNixSetupError: (error, check) => this.nixSetupFailed(error, check.jobId),
    });
    const runner = new JobRunner({ executor, checks, logger, lockDurationMs, handBacks: this.handBacks });
    const capabilities = { systems: config.systems, supportedFeatures: config.supportedFeatures, mandatoryFeatures: config.mandatoryFeatures };
    const gate = new PlacementGate({
      redis,
      // The advertised load, as the other workers see it: both sides of a comparison must use the same numbers, or both may yield.
      self: () => ({ name: config.name, running: this.slots.advertised, maxJobs: config.maxJobs, speedFactor: config.speedFactor }),
    });
    this.fetcher = new JobFetcher({ redis, subscriber: redis.duplicate(), capabilities, workerName: config.name, logger, lockDurationMs, gate });
    const startedAt = Date.now();
    const info = (): WorkerInfo => {
      const disk = this.diskFloor.current;
      // Nix that cannot build outranks low disk: it is the one an operator must act on.
      const paused = this.revoked ?? this.nixSetup?.paused ?? disk.paused;
      return {
        name: config.name,
        ...capabilities,
        maxJobs: config.maxJobs,
        speedFactor: config.speedFactor,
        running: this.slots.advertised,
        heartbeatAt: Date.now(),
        startedAt,
        host: os.hostname(),
        publicKeyFingerprint: identity.fingerprint,
        nixVersion,
        draining: this.draining,
        fetchRestarts: this.fetcher?.restarts ?? 0,
        ...(disk.freeBytes === undefined ? {} : { freeDiskBytes: disk.freeBytes }),
        ...(paused === undefined ? {} : { paused }),
      };
    };
    // Free space is measured on every periodic beat (and before each fetch), never in the way of a load update.
    this.heartbeat = new WorkerHeartbeat(redis, info, { refresh: () => this.diskFloor.check() });
    await this.heartbeat.start();
    this.cancelSubscriber = redis.duplicate();
    await this.cancelSubscriber.subscribe(redisKeys.cancelBuilds, redisKeys.revokedKeys);
    this.cancelSubscriber.on('message', (channel: string, message: string) => {
      if (channel === redisKeys.revokedKeys) {
        if (message === identity.fingerprint) this.keyRevoked(identity.fingerprint);
        return;
      }
      const hash = message;
      const build = this.builds.get(hash);
      if (build === undefined) return;
      logger.info({ hash }, 'build cancelled by the coordinator; stopping it');
      build.canceller.abort();
    });
    await this.fetcher.start();
    logger.info(
      {
        worker: config.name,
        systems: config.systems,
        maxJobs: config.maxJobs,
        speedFactor: config.speedFactor,
        nixVersion,
        minFreeDiskMiB: config.minFreeDiskMiB,
        drainSeconds: config.drainSeconds,
        maxLogSize: config.maxLogSize,
      },
      'worker ready',
    );
    this.loop = this.fetchLoop(runner);
    const fetcher = this.fetcher;
    if (config.fetchWatchdogSeconds > 0) {
      this.watchdog = new FetchWatchdog({
        stallMs: config.fetchWatchdogSeconds * 1000,
        logger,
        lastFetchAt: () => fetcher.lastFetchAt,
        wantsWork: () => !this.stopping && !this.slots.full,
        active: () => !this.stopping,
        fetchConnectionSilentMs: (timeoutMs) => fetcher.fetchConnectionSilentMs(timeoutMs),
        waitingJobs: () => fetcher.waitingJobs(),
        restart: (stall) => {
          fetcher.restart(stall);
          void this.heartbeat?.beat().catch(() => undefined);
        },
      });
      this.watchdog.start();
    }
  }

  private async fetchLoop(runner: JobRunner): Promise<void> {
    const fetcher = this.fetcher!;
    let paused: string | undefined;
    /** one wait for a free slot at a time, however often a wake-up ends the wait first */
    let freeSlot: Promise<void> | undefined;
    while (!this.stopping) {
      if (this.slots.full) {
        freeSlot ??= this.slots.nextFree().finally(() => (freeSlot = undefined));
        if (!this.runsBackgroundCheck()) {
          await freeSlot;
          fetcher.fetchNotNeeded();
          continue;
        }
        // A background check holds a slot: on a wake-up or the idle poll, see whether real work waits for it.
        await Promise.race([freeSlot, fetcher.idle()]);
        if (this.slots.full && !this.stopping) await this.yieldBackgroundCheck(fetcher);
        fetcher.fetchNotNeeded();
        continue;
      }
      // Low on disk, or Nix cannot build: no new builds (running ones go on) until that passes; the change is advertised at once.
      const disk = await this.diskFloor.check();
      const now = this.revoked ?? (await this.nixSetup?.check()) ?? disk.paused;
      if (now !== paused) {
        paused = now;
        void this.heartbeat?.beat().catch(() => undefined);
      }
      if (paused !== undefined) {
        await fetcher.idle();
        fetcher.fetchNotNeeded();
        continue;
      }
      let fetched;
      try {
        fetched = await fetcher.fetch();
      } catch (error) {
        // Permissions taken away while running: no retry can help; stop, once, naming what is missing.
        const denial = noPermissionIn(error, this.redisUser);
        if (denial !== undefined) {
          this.logger.fatal({ err: error, missing: denial.missing }, denial.message);
          this.stopping = true;
          this.options.onFatal?.(denial);
          break;
        }
        this.logger.warn({ err: error }, 'fetching jobs failed; retrying');
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (fetched === undefined) {
        await fetcher.idle();
        await fetcher.refreshQueues().catch(() => undefined);
        continue;
      }
      if (this.stopping || this.nixSetup?.paused !== undefined) {
        // Taken while the worker began to leave, or as a build found Nix unable to build: straight back to its queue, never started (no report to undo).
        await fetched.job
          .moveToWait(fetched.token)
          .catch((error: unknown) => this.logger.warn({ err: error, jobId: fetched.job.id }, 'returning a job taken while leaving failed; its lock expires'));
        if (this.stopping) break;
        continue;
      }
      const hash = hashOfQueuedJobId(String(fetched.job.id));
      const build: RunningBuild = { jobId: String(fetched.job.id), canceller: new AbortController(), background: fetched.background, startedAt: Date.now() };
      this.builds.set(hash, build);
      this.slots.run(build.jobId, () =>
        runner
          .run(fetched.job, fetched.token, build.canceller.signal)
          .catch((error: unknown) => this.logger.error({ err: error, jobId: fetched.job.id }, 'job failed to report'))
          .finally(() => {
            if (this.builds.get(hash) === build) this.builds.delete(hash);
          }),
      );
    }
  }

  /**
   * The coordinator's operator revoked this worker's key: its reports no longer count and its running builds were
   * queued again elsewhere, so it stops them and takes no more (pausing, as for low disk) until it is authorised
   * again and restarted.
   */
  private keyRevoked(fingerprint: string): void {
    if (this.revoked !== undefined) return;
    this.revoked = `this worker's key ${fingerprint} was revoked on the coordinator; authorise it again (nixfarm authorize) and restart the worker`;
    this.logger.error({ fingerprint, running: this.builds.size }, 'worker key revoked by the coordinator: stopping running builds and taking no more');
    for (const build of this.builds.values()) build.canceller.abort();
    void this.heartbeat?.beat().catch(() => undefined);
  }

  private runsBackgroundCheck(): boolean {
    for (const build of this.builds.values()) if (build.background && build.yielding !== true) return true;
    return false;
  }

  /**
   * Sampled checks never delay real work: with every slot taken and a build
   * or a requested check waiting in a queue this worker serves, the most
   * recently started background check goes back to its queue (a hand-back:
   * not counted as a try), and its slot takes the real work. The fetch
   * order takes the real work before the check again.
   */
  private async yieldBackgroundCheck(fetcher: JobFetcher): Promise<void> {
    let newest: RunningBuild | undefined;
    for (const build of this.builds.values()) {
      if (build.background && build.yielding !== true && (newest === undefined || build.startedAt >= newest.startedAt)) newest = build;
    }
    if (newest === undefined) return;
    let waiting: boolean;
    try {
      waiting = await fetcher.realWorkWaiting();
    } catch (error) {
      this.logger.warn({ err: error }, 'could not count the waiting work; the background check goes on');
      return;
    }
    if (!waiting || newest.yielding === true || this.builds.get(hashOfQueuedJobId(newest.jobId)) !== newest) return;
    newest.yielding = true;
    const reason = `worker ${this.config.name} gave a background check back: real work waits for its slot`;
    this.logger.info({ jobId: newest.jobId, reason }, 'handing a background check back');
    this.handBacks.request(newest.jobId, reason);
    newest.canceller.abort();
  }

  /**
   * Leaves without losing work: takes no new builds at once (and says so in
   * its heartbeat), lets running builds finish until the drain timeout, then
   * hands back what still runs (also when `handBackNow` settles first): each
   * build is stopped, reported handed back, and its job returned to its
   * queue for another worker. Then stops.
   */
  async drain(options: DrainOptions = {}): Promise<DrainResult> {
    const timeoutMs = options.timeoutMs ?? this.config.drainSeconds * 1000;
    const deadline = Date.now() + timeoutMs;
    this.draining = true;
    await this.stopFetching();
    await this.heartbeat?.beat().catch(() => undefined);
    const waitedFor = this.slots.taken;
    this.logger.info({ running: waitedFor, deadline: new Date(deadline).toISOString(), drainSeconds: timeoutMs / 1000 }, 'draining: taking no new builds');
    options.onDraining?.({ running: waitedFor, deadline });
    let timer: NodeJS.Timeout | undefined;
    const cause = await Promise.race([
      this.slots.settled().then(() => undefined),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs))),
      ...(options.handBackNow === undefined
        ? []
        : [
            options.handBackNow.then(
              () => 'told' as const,
              () => 'told' as const,
            ),
          ]),
    ]);
    clearTimeout(timer);
    const before = this.handBacks.total;
    if (cause !== undefined && this.slots.taken > 0) {
      this.handBackRunning(
        cause === 'timeout'
          ? `worker ${this.config.name} is leaving and its drain timeout of ${timeoutMs / 1000} s ran out`
          : `worker ${this.config.name} was told to leave now`,
      );
    }
    await this.stop();
    const handedBack = this.handBacks.total - before;
    return { waitedFor, handedBack, ...(cause === undefined || handedBack === 0 ? {} : { handBackCause: cause }) };
  }

  /**
   * A build found that this worker's Nix cannot build: that build is not
   * the derivation's fault, so it goes back to its queue for another worker
   * (its try not counted), and the worker pauses itself.
   */
  private nixSetupFailed(error: NixSetupError, jobId: string): void {
    this.handBacks.request(jobId, error.oneLine());
    if (this.nixSetup?.trip(error) === true) void this.heartbeat?.beat().catch(() => undefined);
  }

  /** Stops every running build for a hand-back; a build already past its build step (copying out) ends as usual. */
  private handBackRunning(reason: string): void {
    for (const [hash, build] of this.builds) {
      this.logger.info({ hash, jobId: build.jobId, reason }, 'handing the build back');
      this.handBacks.request(build.jobId, reason);
      build.canceller.abort();
    }
  }

  /** No fetch is under way or will start; a job taken meanwhile went back to its queue. */
  private async stopFetching(): Promise<void> {
    this.stopping = true;
    this.watchdog?.stop();
    this.fetcher?.wakeUp();
    this.slots.interrupt();
    await this.loop;
  }

  /** Stops taking jobs, lets running builds finish, then leaves. */
  async stop(): Promise<void> {
    await this.stopFetching();
    await this.slots.settled();
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
