import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Redis } from 'ioredis';
import { NixfarmError, formatZodError, submitRunRequestSchema, type Derivation, type Logger } from '@nixfarm/shared';
import type { RunService } from '../runs/run-service.js';
import type { RunEvents } from '../runs/run-events.js';
import type { WorkerDirectory } from '../dispatch/worker-directory.js';
import type { BuildQueues } from '../dispatch/build-queues.js';
import { AmbiguousQueryError, DerivationNotFoundError, WhyService } from '../explain/index.js';

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
}

/** HTTP status for each error code the API can return. */
function httpStatusFor(error: unknown): number {
  if (!(error instanceof NixfarmError)) return 500;
  switch (error.code) {
    case 'invalid-input':
    case 'invalid-request':
    case 'invalid-store-path':
      return 400;
    case 'run-not-found':
      return 404;
    case 'evaluation-failed':
    case 'unsupported-derivation':
      return 422;
    default:
      return error.retryable ? 503 : 500;
  }
}

function sendError(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  return reply.code(status).send({ error: { code, message } });
}

export function createHttpApi(deps: HttpApiDeps): FastifyInstance {
  const app = Fastify({
    // Per-request lines stay out of the log (they are at info); Fastify's own warnings and errors stay in.
    loggerInstance: deps.logger.child({ component: 'http' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit: deps.bodyLimitBytes ?? 1024 * 1024,
  });

  app.setErrorHandler((error, _request, reply) => {
    const fastifyError = error as { statusCode?: number; code?: string; message: string };
    if (fastifyError.statusCode === 413) return sendError(reply, 413, 'body-too-large', `request body is larger than ${deps.bodyLimitBytes ?? 1024 * 1024} bytes`);
    if (fastifyError.statusCode !== undefined && fastifyError.statusCode < 500 && !(error instanceof NixfarmError)) {
      return sendError(reply, fastifyError.statusCode, 'invalid-request', fastifyError.message);
    }
    const status = httpStatusFor(error);
    if (status >= 500) deps.logger.error({ err: error }, 'request failed');
    return sendError(reply, status, error instanceof NixfarmError ? error.code : 'internal-error', fastifyError.message);
  });

  app.get('/api/health', async () => ({ ok: true }));

  app.post('/api/runs', async (request, reply) => {
    const parsed = submitRunRequestSchema.safeParse(request.body);
    if (!parsed.success) return sendError(reply, 400, 'invalid-request', formatZodError(parsed.error, 'run request'));
    const run = await deps.runs.submit(parsed.data);
    return reply.code(201).send(run);
  });

  app.get('/api/runs', async () => ({ runs: await deps.runs.list() }));

  app.get<{ Params: { id: string } }>('/api/runs/:id', async (request) => deps.runs.get(request.params.id));

  app.post<{ Params: { id: string } }>('/api/runs/:id/cancel', async (request) => deps.runs.cancel(request.params.id));

  app.get<{ Params: { id: string } }>('/api/runs/:id/derivations', async (request) => ({ derivations: await deps.runs.derivations(request.params.id) }));

  // Server-sent events from the run's durable stream; Last-Event-ID resumes where a client left off.
  app.get<{ Params: { id: string }; Querystring: { after?: string } }>('/api/runs/:id/events', async (request, reply) => {
    const runId = request.params.id;
    await deps.runs.get(runId);
    let cursor = (request.headers['last-event-id'] as string | undefined) ?? request.query.after ?? '0';
    if (!/^\d+-\d+$|^0$/.test(cursor)) return sendError(reply, 400, 'invalid-request', 'after / Last-Event-ID must be a stream id like 1700000000000-0');
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const connection = deps.redis.duplicate();
    let open = true;
    request.raw.on('close', () => {
      open = false;
      connection.disconnect();
    });
    try {
      while (open) {
        const batch = await deps.events.read(connection, runId, cursor, 5000);
        if (batch.length === 0) raw.write(': keep-alive\n\n');
        for (const { id, event } of batch) {
          raw.write(`id: ${id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
          cursor = id;
          if (event.type === 'run-finished') open = false;
        }
      }
    } catch (error) {
      if (open) deps.logger.warn({ err: error, runId }, 'event stream ended');
    } finally {
      connection.disconnect();
      raw.end();
    }
  });

  app.get('/api/workers', async () => ({ workers: await deps.workers.list() }));

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
    try {
      return await why.explain(path);
    } catch (error) {
      if (error instanceof DerivationNotFoundError) return sendError(reply, 404, error.code, error.message);
      if (error instanceof AmbiguousQueryError) {
        return reply.code(409).send({ error: { code: error.code, message: error.message, candidates: error.candidates } });
      }
      throw error;
    }
  });

  return app;
}
