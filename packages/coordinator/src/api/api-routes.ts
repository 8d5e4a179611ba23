import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Derivation, Logger } from '@nixfarm/shared';
import type { RunService } from '../runs/run-service.js';
import type { RunEvents } from '../runs/run-events.js';
import type { WorkerDirectory } from '../dispatch/worker-directory.js';
import type { BuildQueues } from '../dispatch/build-queues.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import type { BuildLogService } from '../logs/build-log-service.js';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import type { ApiTokens } from './api-tokens.js';
import { WhyService, type WhyServiceDeps } from '../explain/index.js';
import { FarmStatusCollector } from '../metrics/farm-status-collector.js';
import { DashboardCollector } from '../dashboard/dashboard-collector.js';
import { DashboardFeed } from '../dashboard/dashboard-feed.js';
import { registerDashboardRoutes } from '../dashboard/dashboard-routes.js';
import { registerQueueBoard } from '../dashboard/queue-board.js';
import type { EventStreams } from '../http/event-streams.js';
import { registerHealthRoute, registerQueuesRoute, registerWorkersRoute } from './farm-routes.js';
import { registerRunRoutes } from './run-routes.js';
import { registerSessionRoutes } from './session-routes.js';
import { registerMetricsRoutes } from './metrics-routes.js';
import { registerWhyRoutes } from './why-routes.js';
import { registerLogRoutes } from './log-routes.js';
import { registerOpenApiRoute } from './openapi-routes.js';
import { registerUploadRoutes, type UploadRoutesDeps } from './upload-routes.js';
import { registerCheckRoutes, type CheckRoutesDeps } from '../checks/check-routes.js';
import { registerHistoryRoutes, type HistoryRoutesDeps } from '../history/history-routes.js';

export interface ApiRoutesDeps {
  runs: RunService;
  events: RunEvents;
  workers: WorkerDirectory;
  queues: BuildQueues;
  /** used to open one blocking connection per live event stream */
  redis: Redis;
  /** the coordinator's Nix adapter: `why` reads a .drv to name the inputs it waits for (absent: read the file directly) */
  nix?: { readDerivation(drvPath: string): Promise<Derivation> };
  logger: Logger;
  /** the scheduling core's metrics: GET /metrics and GET /api/status */
  metrics?: FarmMetrics;
  /** build logs (absent: no log routes) */
  logs?: BuildLogService;
  /** the bearer tokens every route but /api/health needs */
  tokens: ApiTokens;
  /** the derivation graph: with metrics, the web dashboard (GET /, /api/dashboard) and the queue board (/queues) */
  graph?: DerivationGraph;
  /** how queued builds stand in the fair shares, for `why` */
  fairShare?: WhyServiceDeps['fairShare'];
  /** uploads to external caches (absent: no upload routes) */
  uploads?: UploadRoutesDeps['uploads'];
  /** reproducibility checks (absent: no check routes) */
  checks?: CheckRoutesDeps;
  /** the farm status snapshot, when the coordinator shares it with its history sampler (absent: made here from the deps) */
  status?: FarmStatusCollector;
  /** the farm's history for the dashboard's charts (absent: no GET /api/history) */
  history?: HistoryRoutesDeps;
}

/**
 * Every route of the coordinator's HTTP API, the dashboard and the queue
 * board, in the order the 404's route list names them. The server they run
 * in (error shape, auth, documentation) is http-api.ts's.
 */
export function registerApiRoutes(app: FastifyInstance, deps: ApiRoutesDeps, streams: EventStreams, openApiDocument: () => unknown): void {
  registerHealthRoute(app);
  registerRunRoutes(app, { ...deps, streams });
  if (deps.uploads !== undefined) registerUploadRoutes(app, { runs: deps.runs, uploads: deps.uploads });
  if (deps.checks !== undefined) registerCheckRoutes(app, deps.checks);
  registerWorkersRoute(app, deps);
  registerSessionRoutes(app, { tokens: deps.tokens, logger: deps.logger });

  if (deps.metrics !== undefined) {
    const status = deps.status ?? new FarmStatusCollector({ ...deps, queueWaits: deps.metrics.queueWaits });
    registerMetricsRoutes(app, { ...deps, metrics: deps.metrics, status });
    if (deps.graph !== undefined) {
      const collector = new DashboardCollector({
        redis: deps.redis,
        runs: deps.runs,
        graph: deps.graph,
        farmStatus: status,
        ...(deps.uploads === undefined ? {} : { uploads: deps.uploads.queue }),
        ...(deps.checks === undefined ? {} : { checks: deps.checks.service }),
      });
      const feed = new DashboardFeed({ collect: () => collector.collect(), logger: deps.logger.child({ component: 'dashboard' }) });
      app.addHook('onClose', async () => feed.stop());
      registerDashboardRoutes(app, { feed, streams });
      registerQueueBoard(app, { queues: deps.queues, logger: deps.logger.child({ component: 'queue-board' }) });
    }
  }
  registerQueuesRoute(app, deps);
  if (deps.history !== undefined) registerHistoryRoutes(app, deps.history);

  const why = new WhyService({
    redis: deps.redis,
    workers: deps.workers,
    queues: deps.queues,
    ...(deps.fairShare === undefined ? {} : { fairShare: deps.fairShare }),
    ...(deps.nix === undefined ? {} : { readDerivation: (drvPath: string) => deps.nix!.readDerivation(drvPath) }),
  });
  registerWhyRoutes(app, { why });

  if (deps.logs !== undefined) registerLogRoutes(app, { redis: deps.redis, runs: deps.runs, logs: deps.logs, logger: deps.logger, streams });

  registerOpenApiRoute(app, openApiDocument);
}
