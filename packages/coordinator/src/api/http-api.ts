import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Redis } from 'ioredis';
import { NixfarmError, formatZodError, runIdSchema, submitRunRequestSchema, type Derivation, type ErrorCode, type Logger } from '@nixfarm/shared';
import type { RunService } from '../runs/run-service.js';
import type { RunEvents } from '../runs/run-events.js';
import type { WorkerDirectory } from '../dispatch/worker-directory.js';
import type { BuildQueues } from '../dispatch/build-queues.js';
import { WhyService } from '../explain/index.js';
import { httpStatusFor, sendError, sendNixfarmError } from './api-errors.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import { registerMetricsRoutes } from './metrics-routes.js';
import type { BuildLogService } from '../logs/build-log-service.js';
import { registerLogRoutes } from './log-routes.js';
import type { ApiTokens } from './api-tokens.js';
import { registerApiAuth } from './api-auth.js';
import { registerOpenApiRoutes } from './openapi-routes.js';
import { registerSessionRoutes } from './session-routes.js';
import { EVENT_STREAM_HEADERS, EventStreams } from './event-streams.js';
import { FarmStatusCollector } from '../metrics/farm-status-collector.js';
import type { DerivationGraph } from '../graph/derivation-graph.js';
import { DashboardCollector } from '../dashboard/dashboard-collector.js';
import { DashboardFeed } from '../dashboard/dashboard-feed.js';
import { registerDashboardRoutes } from '../dashboard/dashboard-routes.js';
import { registerQueueBoard } from '../dashboard/queue-board.js';

export interface HttpApiDeps {
  runs: RunService;
  events: RunEvents;
  workers: WorkerDirectory;
  queues: BuildQueues;
  /** used to open one blocking connection per live event stream */
  redis: Redis;
  /** the coordinator's Nix adapter: `why` reads a .drv to name the inputs it waits for (absent: read the file directly) */
  nix?: { readDerivation(drvPath: string): Promise<Derivation> };
  logger: Logger;
  bodyLimitBytes?: number;
  /** the scheduling core's metrics: GET /metrics and GET /api/status */
  metrics?: FarmMetrics;
  /** build logs (absent: no log routes) */
  logs?: BuildLogService;
  /** the bearer tokens every route but /api/health needs */
  tokens: ApiTokens;
  /** the derivation graph: with metrics, the web dashboard (GET /, /api/dashboard) and the queue board (/queues) */
  graph?: DerivationGraph;
}

const DEFAULT_BODY_LIMIT = 1024 * 1024;

function formatBytes(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : bytes % 1024 === 0 ? `${bytes / 1024} KiB` : `${bytes} bytes`;
}

/** Fastify's own refusals of a request (unparsable body, bad URL), reworded to say what to send instead. */
function describeFrameworkError(error: { code?: string; message: string }, bodyLimit: number): { status: number; code: ErrorCode; message: string } | undefined {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return {
        status: 413,
        code: 'body-too-large',
        message: `request body is larger than the API's limit of ${bodyLimit} bytes (${formatBytes(bodyLimit)}); put a large expression in a file and send its path as file`,
      };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, code: 'invalid-request', message: 'request body is not valid JSON (or has a __proto__ or constructor key): send one JSON object' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, code: 'invalid-request', message: 'request body is empty but content-type says JSON: send a JSON object, or no content-type' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'unsupported-media-type', message: `${error.message}: send JSON with content-type: application/json` };
    case 'FST_ERR_BAD_URL':
      return { status: 400, code: 'invalid-request', message: `${error.message}: percent-encode the path correctly` };
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return { status: 414, code: 'invalid-request', message: 'a path parameter is too long: run ids are at most 40 characters' };
    default:
      return undefined;
  }
}

export function createHttpApi(deps: HttpApiDeps): FastifyInstance {
  const bodyLimit = deps.bodyLimitBytes ?? DEFAULT_BODY_LIMIT;
  const routes: string[] = [];
  const app = Fastify({
    // Per-request lines stay out of the log (they are at info); Fastify's own warnings and errors stay in.
    loggerInstance: deps.logger.child({ component: 'http' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit,
    // Bad URLs are refused by the router before any handler: in the API's error shape too.
    frameworkErrors: (error, _request, reply) => {
      const known = describeFrameworkError(error, bodyLimit) ?? { status: 400, code: 'invalid-request' as const, message: error.message };
      void sendError(reply, known.status, known.code, known.message);
    },
  });
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) if (method !== 'HEAD') routes.push(`${method} ${route.url}`);
  });

  registerApiAuth(app, { tokens: deps.tokens, logger: deps.logger.child({ component: 'http' }) });
  const streams = new EventStreams(app);

  app.setErrorHandler((error, _request, reply) => {
    const fastifyError = error as { statusCode?: number; code?: string; message: string };
    const known = describeFrameworkError(fastifyError, bodyLimit);
    if (known !== undefined) return sendError(reply, known.status, known.code, known.message);
    if (fastifyError.statusCode !== undefined && fastifyError.statusCode < 500 && !(error instanceof NixfarmError)) {
      return sendError(reply, fastifyError.statusCode, 'invalid-request', fastifyError.message);
    }
    const status = httpStatusFor(error);
    if (status >= 500) deps.logger.error({ err: error }, 'request failed');
    return error instanceof NixfarmError ? sendNixfarmError(reply, status, error) : sendError(reply, status, 'internal-error', fastifyError.message);
  });

  app.setNotFoundHandler((request, reply) =>
    sendError(reply, 404, 'no-such-route', `no route ${request.method} ${request.url.split('?')[0]}; the API has: ${routes.join(', ')}`),
  );

  /** A run id that cannot be one is a bad request (400); a well-formed unknown one is not found (404, from the run service). */
  const checkRunId = (id: string, reply: FastifyReply): FastifyReply | undefined =>
    runIdSchema.safeParse(id).success
      ? undefined
      : sendError(reply, 400, 'invalid-request', `${JSON.stringify(id)} is not a run id: run ids are 6-40 lower-case letters and digits, as \`nixfarm build\` prints and \`nixfarm runs\` lists them`);

  app.get('/api/health', async () => ({ ok: true }));

  app.post('/api/runs', async (request, reply) => {
    const parsed = submitRunRequestSchema.safeParse(request.body, { reportInput: true });
    if (!parsed.success) return sendError(reply, 400, 'invalid-request', formatZodError(parsed.error, 'run request'));
    const run = await deps.runs.submit(parsed.data);
    return reply.code(201).send(run);
  });

  app.get('/api/runs', async () => ({ runs: await deps.runs.list() }));

  app.get<{ Params: { id: string } }>('/api/runs/:id', async (request, reply) => checkRunId(request.params.id, reply) ?? deps.runs.get(request.params.id));

  app.post<{ Params: { id: string } }>('/api/runs/:id/cancel', async (request, reply) => checkRunId(request.params.id, reply) ?? deps.runs.cancel(request.params.id));

  app.get<{ Params: { id: string } }>('/api/runs/:id/derivations', async (request, reply) =>
    checkRunId(request.params.id, reply) ?? { derivations: await deps.runs.derivations(request.params.id) },
  );

  // Server-sent events from the run's durable stream; Last-Event-ID resumes where a client left off.
  app.get<{ Params: { id: string }; Querystring: { after?: string } }>('/api/runs/:id/events', async (request, reply) => {
    const runId = request.params.id;
    if (checkRunId(runId, reply) !== undefined) return reply;
    await deps.runs.get(runId);
    let cursor = (request.headers['last-event-id'] as string | undefined) ?? request.query.after ?? '0';
    if (!/^\d+-\d+$|^0$/.test(cursor)) return sendError(reply, 400, 'invalid-request', 'after / Last-Event-ID must be a stream id like 1700000000000-0');
    const { raw, closed } = streams.start(request, reply, EVENT_STREAM_HEADERS);
    const connection = deps.redis.duplicate();
    // A blocked read returns at once when its connection goes: the client left, or the coordinator stops.
    closed.addEventListener('abort', () => connection.disconnect(), { once: true });
    try {
      while (!closed.aborted) {
        const batch = await deps.events.read(connection, runId, cursor, 5000);
        if (batch.length === 0) raw.write(': keep-alive\n\n');
        for (const { id, event } of batch) {
          raw.write(`id: ${id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
          cursor = id;
          if (event.type === 'run-finished') return;
        }
      }
    } catch (error) {
      if (!closed.aborted) deps.logger.warn({ err: error, runId }, 'event stream ended');
    } finally {
      connection.disconnect();
      raw.end();
    }
  });

  app.get('/api/workers', async () => ({ workers: await deps.workers.list() }));

  registerSessionRoutes(app, { tokens: deps.tokens, logger: deps.logger });

  if (deps.metrics !== undefined) {
    const status = new FarmStatusCollector({ ...deps, queueWaits: deps.metrics.queueWaits });
    registerMetricsRoutes(app, { ...deps, metrics: deps.metrics, status });
    if (deps.graph !== undefined) {
      const collector = new DashboardCollector({ redis: deps.redis, runs: deps.runs, graph: deps.graph, farmStatus: status });
      const feed = new DashboardFeed({ collect: () => collector.collect(), logger: deps.logger.child({ component: 'dashboard' }) });
      app.addHook('onClose', async () => feed.stop());
      registerDashboardRoutes(app, { feed, streams });
      registerQueueBoard(app, { queues: deps.queues, logger: deps.logger.child({ component: 'queue-board' }) });
    }
  }

  app.get('/api/queues', async () => {
    const names = await deps.queues.names();
    const queues = [];
    for (const name of names) {
      const counts = await deps.queues.queue(name).getJobCounts('waiting', 'prioritized', 'active', 'delayed');
      queues.push({ name, waiting: (counts.waiting ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0), running: counts.active ?? 0 });
    }
    return { queues };
  });

  // `nixfarm why`: explains one derivation (a .drv path, an output path or a hash prefix).
  // 200 explained; 400 not a store path or hash prefix; 404 unknown; 409 an ambiguous prefix (candidates listed).
  const why = new WhyService({
    redis: deps.redis,
    workers: deps.workers,
    queues: deps.queues,
    ...(deps.nix === undefined ? {} : { readDerivation: (drvPath: string) => deps.nix!.readDerivation(drvPath) }),
  });
  app.get<{ Querystring: { path?: string } }>('/api/why', async (request, reply) => {
    const path = request.query.path;
    if (typeof path !== 'string' || path.trim() === '') {
      return sendError(reply, 400, 'invalid-request', 'give ?path= a .drv path, an output path or a hash prefix');
    }
    // Unknown (404) and ambiguous (409, with the candidates) are the error handler's.
    return why.explain(path);
  });

  if (deps.logs !== undefined) registerLogRoutes(app, { redis: deps.redis, runs: deps.runs, logs: deps.logs, logger: deps.logger, streams });

  registerOpenApiRoutes(app);

  return app;
}
