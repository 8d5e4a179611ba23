import { mkdir } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import type { Logger, ReportKey } from '@nixfarm/shared';
import type { CoordinatorNix } from './nix/coordinator-nix.js';
import type { OutputVerifier } from './nix/output-verifier.js';
import type { LocalBuilder } from './local/local-builder.js';
import type { BuildLogService } from './logs/build-log-service.js';
import { OutputSigner } from './cache/output-signer.js';
import type { SigningKey } from './cache/signing-key.js';
import { BuildPlanner } from './evaluation/build-planner.js';
import { DerivationGraph } from './graph/derivation-graph.js';
import { BuildQueues } from './dispatch/build-queues.js';
import { WorkerDirectory } from './dispatch/worker-directory.js';
import { BuildDispatcher } from './dispatch/build-dispatcher.js';
import { RunEvents } from './runs/run-events.js';
import { GcRoots } from './runs/gc-roots.js';
import { BuildDurations } from './runs/build-durations.js';
import { RunQueries } from './runs/run-queries.js';
import { RunEvaluation } from './runs/run-evaluation.js';
import { RunFinalizer } from './runs/run-finalizer.js';
import { RunSubmission } from './runs/run-submission.js';
import { RunCancellation } from './runs/run-cancellation.js';
import { RunResume } from './runs/run-resume.js';
import { RunService } from './runs/run-service.js';
import { RunAttributes } from './runs/run-attributes.js';
import { JobsetSubmission } from './runs/jobset-submission.js';
import { WorkerEventHandler } from './reports/worker-event-handler.js';
import { WorkerEventConsumer } from './reports/worker-event-consumer.js';
import { ReportGate } from './reports/report-gate.js';
import { WorkerRevocation } from './reports/worker-revocation.js';
import type { AuthorizedKeys } from './store-endpoint/authorized-keys.js';
import { FarmMetrics } from './metrics/farm-metrics.js';
import { readRedisMemory } from './metrics/redis-memory.js';
import { UploadQueue } from './uploads/upload-queue.js';
import { RunPush } from './uploads/run-push.js';
import type { UploadTarget } from './uploads/upload-target.js';
import { ImagePublishQueue } from './images/image-publish-queue.js';
import { CheckRecords } from './checks/check-records.js';
import { CheckQueues } from './checks/check-queues.js';
import { CheckService } from './checks/check-service.js';
import { MismatchInspector } from './checks/mismatch-inspector.js';

export interface SchedulingCoreOptions {
  redis: Redis;
  logger: Logger;
  /** evaluation and planning (nix-instantiate, reading .drv files) */
  nix: CoordinatorNix;
  /** whether outputs are valid in the coordinator's store; production passes `nix` */
  verifier: OutputVerifier;
  gcRootsDir: string;
  /** builds preferLocalBuild derivations on the coordinator; absent when turned off */
  localBuilder?: LocalBuilder;
  /** stores build logs as builds end; absent: logs stay in Redis only */
  logs?: BuildLogService;
  /** `--option` pairs and environment for jobset evaluators (the coordinator's Nix settings) */
  evaluatorNix?: { nixOptions: ReadonlyArray<readonly [string, string]>; env?: Record<string, string> };
  /** signs every output that becomes valid through the farm (absent: nothing is signed) */
  signing?: { key: SigningKey; nix: Pick<CoordinatorNix, 'signPaths'> };
  /** how often the safety-net reconcile runs */
  reconcileIntervalMs?: number;
  /** uploads to external caches: --push-to targets for every succeeded run, and `nixfarm push` (absent: neither) */
  uploads?: { targets: readonly UploadTarget[]; concurrency: number; stagingDir: string };
  /** retries of image pushes to a registry that is down: tries per image and the first delay (doubling) */
  imagePublish?: { attempts?: number; backoffMs?: number };
  /**
   * Reproducibility checks: the share of successful builds sampled in the background, the size up to which
   * a differing output comes back, where the copies and reports live, and the user's diff hook.
   */
  checks?: { fraction: number; maxNarBytes: number; dir: string; diffHook?: string };
  /**
   * Who may post reports: the workers' authorised keys, the coordinator's own key (its local builder's reports),
   * and who to tell when a key is revoked (the store endpoint drops its connections).
   */
  reports: { keys: AuthorizedKeys; own?: ReportKey; onRevoked?: (fingerprints: ReadonlySet<string>) => void };
}

/**
 * The composition root of everything that schedules builds, without the HTTP
 * API or the store endpoint: evaluation and planning, the graph, the queues
 * and the dispatcher, the run systems and their events, and the consumer of
 * worker reports. Each system gets the few others it uses here, and nowhere
 * else. The coordinator runs it; the scheduler bench runs the same object in
 * a process of its own.
 */
export class SchedulingCore {
  readonly graph: DerivationGraph;
  readonly queues: BuildQueues;
  readonly events: RunEvents;
  readonly gcRoots: GcRoots;
  readonly workers: WorkerDirectory;
  /** where ready builds go; it keeps the fair shares between runs */
  readonly dispatcher: BuildDispatcher;
  readonly runs: RunService;
  readonly handler: WorkerEventHandler;
  /** this process's Prometheus registry, fed by the queues, the runs and the report handler */
  readonly metrics = new FarmMetrics();
  /** the upload queue and `nixfarm push`, when uploads are on */
  readonly uploads: { queue: UploadQueue; push: RunPush } | undefined;
  /** pushes the images among finished runs' outputs to registries, in the background */
  readonly images: ImagePublishQueue;
  /** reproducibility checks: asked for by runs, sampled after builds */
  readonly checks: CheckService;
  /** the reports of mismatches, when checks keep them on disk */
  readonly mismatches: MismatchInspector | undefined;
  private readonly checkQueues: CheckQueues;
  private readonly consumer: WorkerEventConsumer;
  private readonly revocation: WorkerRevocation;
  private reconciler: NodeJS.Timeout | undefined;

  constructor(private readonly options: SchedulingCoreOptions) {
    const { redis, logger, nix, verifier, localBuilder } = options;
    const metrics = this.metrics;
    metrics.watchRedisMemory(() => readRedisMemory(redis));
    const graph = (this.graph = new DerivationGraph(redis));
    const queues = (this.queues = new BuildQueues({ redis, logger, waits: metrics.queueWaits }));
    const events = (this.events = new RunEvents(redis));
    const gcRoots = (this.gcRoots = new GcRoots(options.gcRootsDir));
    const workers = (this.workers = new WorkerDirectory(redis));
    const durations = new BuildDurations(redis);
    const dispatcher = (this.dispatcher = new BuildDispatcher({
      queues,
      workers,
      graph,
      events,
      logger,
      ...(localBuilder === undefined ? {} : { localBuilder }),
    }));
    const attributes = new RunAttributes(redis);
    const planner = new BuildPlanner({ nix, logger });
    this.checkQueues = new CheckQueues({ redis, logger });
    const checkOptions = options.checks;
    this.mismatches =
      checkOptions === undefined
        ? undefined
        : new MismatchInspector({
            redis,
            dir: checkOptions.dir,
            maxNarBytes: checkOptions.maxNarBytes,
            logger: logger.child({ component: 'checks' }),
            ...(checkOptions.diffHook === undefined ? {} : { diffHook: checkOptions.diffHook }),
          });
    // The finalizer asks the checks about a run, and the checks end runs through the finalizer: bound once both exist.
    let finalizeRun: (runId: string) => Promise<void> = async () => undefined;
    const checks = (this.checks = new CheckService({
      records: new CheckRecords(redis),
      queues: this.checkQueues,
      planner,
      graph,
      narHashes: async (paths) => (verifier.narHashes === undefined ? new Map() : verifier.narHashes(paths)),
      events,
      finalize: (runId) => finalizeRun(runId),
      logger: logger.child({ component: 'checks' }),
      metrics,
      ...(this.mismatches === undefined ? {} : { inspector: this.mismatches }),
      ...(checkOptions === undefined ? {} : { fraction: checkOptions.fraction, maxNarBytes: checkOptions.maxNarBytes }),
    }));
    const images = (this.images = new ImagePublishQueue({ redis, logger: logger.child({ component: 'image-publish' }), ...options.imagePublish }));
    const queries = new RunQueries({ redis, graph, attributes, images: images.publications, checks });
    const uploadQueue =
      options.uploads === undefined ? undefined : new UploadQueue({ redis, logger: logger.child({ component: 'uploads' }), nix, metrics, ...options.uploads });
    const finalizer = new RunFinalizer({
      graph,
      verifier,
      gcRoots,
      events,
      attributes,
      logger,
      metrics,
      images,
      checks,
      ...(uploadQueue === undefined ? {} : { uploads: uploadQueue }),
    });
    finalizeRun = (runId) => finalizer.finalize(runId);
    const evaluation = new RunEvaluation({ nix, planner, gcRoots });
    const submission = new RunSubmission({ evaluation, graph, events, gcRoots, durations, dispatcher, finalizer, queries, logger, metrics, checks });
    const evaluatorNix = options.evaluatorNix ?? { nixOptions: [] };
    this.runs = new RunService({
      submission,
      jobsets: new JobsetSubmission({
        planner,
        nix,
        graph,
        events,
        gcRoots,
        attributes,
        steps: submission,
        dispatcher,
        finalizer,
        queries,
        logger,
        metrics,
        nixOptions: evaluatorNix.nixOptions,
        ...(evaluatorNix.env === undefined ? {} : { env: evaluatorNix.env }),
      }),
      cancellation: new RunCancellation({ graph, queues, dispatcher, redis, events, gcRoots, queries, logger, metrics, checks }),
      resume: new RunResume({ redis, graph, dispatcher, finalizer, attributes, logger }),
      queries,
      images,
    });
    this.handler = new WorkerEventHandler({
      verifier,
      graph,
      dispatcher,
      finalizer,
      events,
      gcRoots,
      durations,
      logger,
      metrics,
      checks,
      ...(options.logs === undefined ? {} : { logs: options.logs }),
      ...(options.signing === undefined
        ? {}
        : { signer: new OutputSigner({ ...options.signing, redis, logger: logger.child({ component: 'output-signer' }), metrics }) }),
    });
    this.uploads =
      uploadQueue === undefined ? undefined : { queue: uploadQueue, push: new RunPush({ runs: this.runs, attributes, verifier, uploads: uploadQueue }) };
    // XREADGROUP blocks its connection: the consumer gets one of its own.
    const reports = options.reports;
    const gate = new ReportGate({ redis, keys: reports.keys, logger, metrics, ...(reports.own === undefined ? {} : { own: reports.own }) });
    this.consumer = new WorkerEventConsumer({ redis: redis.duplicate(), handler: this.handler, gate, logger });
    this.revocation = new WorkerRevocation({
      redis,
      keys: reports.keys,
      graph,
      dispatcher,
      events,
      logger,
      ...(reports.onRevoked === undefined ? {} : { onRevoked: reports.onRevoked }),
    });
  }

  /** Resumes unfinished runs, starts the periodic reconcile and the consumer of worker events; returns the runs resumed. */
  async start(): Promise<number> {
    const { logger } = this.options;
    await mkdir(this.options.gcRootsDir, { recursive: true });
    await this.checks.resume();
    const resumed = await this.runs.resume({ afterRestart: true });
    // A safety net, like Hydra's periodic queue check: re-queue what the graph says is ready and close runs
    // with nothing left, should an event's follow-up ever have been interrupted. Re-adding an existing job is a no-op.
    this.reconciler = setInterval(() => {
      this.runs.resume().catch((error: unknown) => logger.warn({ err: error }, 'periodic reconcile failed'));
      this.checks.resume().catch((error: unknown) => logger.warn({ err: error }, 'periodic reconcile of checks failed'));
    }, this.options.reconcileIntervalMs ?? 60_000);
    this.reconciler.unref();
    await this.revocation.start();
    await this.consumer.start();
    this.uploads?.queue.start();
    this.images.start();
    return resumed;
  }

  async stop(): Promise<void> {
    if (this.reconciler !== undefined) clearInterval(this.reconciler);
    this.revocation.stop();
    await this.consumer.stop();
    await this.uploads?.queue.close();
    await this.images.close();
    await this.queues.close();
    await this.checkQueues.close();
  }
}
