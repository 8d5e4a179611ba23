import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import {
  attributeListResponseSchema,
  derivationListResponseSchema,
  formatZodError,
  runEventSchema,
  runIdSchema,
  runListResponseSchema,
  runTimelineSchema,
  runViewSchema,
  submitRunRequestSchema,
  type Logger,
} from '@nixfarm/shared';
import type { RunService } from '../runs/run-service.js';
import type { RunEvents } from '../runs/run-events.js';
import { sendError } from '../http/api-errors.js';
import { checkUploadTarget, parseUploadTarget } from '../uploads/upload-target.js';
import { EVENT_STREAM_HEADERS, type EventStreams } from '../http/event-streams.js';
import { errorResponse, eventStreamResponse, eventStreamSchema, jsonResponse } from '../http/openapi-components.js';

export interface RunRoutesDeps {
  runs: RunService;
  events: RunEvents;
  /** used to open one blocking connection per live event stream */
  redis: Redis;
  logger: Logger;
  streams: EventStreams;
}

const runParamsSchema = z.object({ id: runIdSchema.describe('a run id, as `nixfarm build` prints it') });
type RunParams = { Params: { id: string } };

/** Where a reader of a run's events resumes: a Redis stream id, or 0 for the start. */
const eventCursorSchema = z.string().regex(/^\d+-\d+$|^0$/);
const eventsQuerySchema = z.object({
  after: eventCursorSchema.optional().describe('resume after this event id (a stream id like 1700000000000-0; 0 = from the start)'),
});
const eventsHeadersSchema = z.object({
  'last-event-id': eventCursorSchema.optional().describe('as after; sent by EventSource when it reconnects (wins over after)'),
});

const attributesQuerySchema = z.object({
  offset: z.coerce.number().int().min(0).default(0).describe('attributes to skip, in the order they were evaluated'),
  limit: z.coerce.number().int().min(1).max(10_000).default(1000).describe('attributes in the page (1-10000, default 1000)'),
});

const BAD_RUN_ID = errorResponse('not a run id (invalid-request)');
const NO_RUN = errorResponse('no such run (run-not-found)');
const RUN_EVENTS = eventStreamSchema('server-sent events whose data lines are RunEvent objects', runEventSchema);

/**
 * Runs: POST /api/runs starts one, GET lists them and answers one with its
 * derivations, POST …/cancel cancels, GET …/events streams what happens,
 * GET …/timeline says where its time went.
 */
export function registerRunRoutes(app: FastifyInstance, deps: RunRoutesDeps): void {
  /** A run id that cannot be one is a bad request (400); a well-formed unknown one is not found (404, from the run service). */
  const checkRunId = (id: string, reply: FastifyReply): FastifyReply | undefined =>
    runIdSchema.safeParse(id).success
      ? undefined
      : sendError(
          reply,
          400,
          'invalid-request',
          `${JSON.stringify(id)} is not a run id: run ids are 6-40 lower-case letters and digits, as \`nixfarm build\` prints and \`nixfarm runs\` lists them`,
        );

  app.post(
    '/api/runs',
    {
      schema: {
        operationId: 'submitRun',
        summary: 'Start a run: evaluate a file or expression (as nix-build would) and build it on the farm',
        description:
          'With `jobset: true` the value is a jobset: every attribute (recursing as nix-eval-jobs does) is evaluated in a pool of evaluators and built as soon as it is known; ' +
          'the run is answered once the first attribute is known, and GET /api/runs/{id}/attributes gives each attribute its result.',
        tags: ['runs'],
        body: submitRunRequestSchema,
        response: {
          '201': jsonResponse('the run, evaluated and queued', runViewSchema),
          '400': errorResponse('the body is not a valid run request (invalid-request), or names a bad store path'),
          '413': errorResponse('the body is larger than the limit (body-too-large)'),
          '415': errorResponse('not JSON (unsupported-media-type)'),
          '422': errorResponse(
            'evaluation failed (for a jobset: its top value cannot be listed), a derivation cannot be built by the farm, or a pushTo directory cannot be written',
          ),
        },
      },
    },
    async (request, reply) => {
      const parsed = submitRunRequestSchema.safeParse(request.body, { reportInput: true });
      if (!parsed.success) return sendError(reply, 400, 'invalid-request', formatZodError(parsed.error, 'run request'));
      // A cache the run names that cannot be written is refused now, not found out once it has built.
      for (const url of parsed.data.pushTo ?? []) await checkUploadTarget(parseUploadTarget(url));
      const run = await deps.runs.submit(parsed.data);
      return reply.code(201).send(run);
    },
  );

  app.get(
    '/api/runs',
    {
      schema: {
        operationId: 'listRuns',
        summary: 'The latest runs, newest first',
        tags: ['runs'],
        response: { '200': jsonResponse('runs', runListResponseSchema) },
      },
    },
    async () => ({ runs: await deps.runs.list() }),
  );

  app.get<RunParams>(
    '/api/runs/:id',
    {
      schema: {
        operationId: 'getRun',
        summary: 'One run: status, timestamps, results and the count of derivations per status',
        tags: ['runs'],
        params: runParamsSchema,
        response: { '200': jsonResponse('the run', runViewSchema), '400': BAD_RUN_ID, '404': NO_RUN },
      },
    },
    async (request, reply) => checkRunId(request.params.id, reply) ?? deps.runs.get(request.params.id),
  );

  app.post<RunParams>(
    '/api/runs/:id/cancel',
    {
      schema: {
        operationId: 'cancelRun',
        summary: 'Cancel a run: its queued builds are dropped, running ones stopped unless another active run needs them',
        tags: ['runs'],
        params: runParamsSchema,
        response: { '200': jsonResponse('the run, cancelled (or as it ended, if it had)', runViewSchema), '400': BAD_RUN_ID, '404': NO_RUN },
      },
    },
    async (request, reply) => checkRunId(request.params.id, reply) ?? deps.runs.cancel(request.params.id),
  );

  app.get<RunParams>(
    '/api/runs/:id/derivations',
    {
      schema: {
        operationId: 'listRunDerivations',
        summary: "A run's derivations with their statuses, workers and timings",
        tags: ['runs'],
        params: runParamsSchema,
        response: { '200': jsonResponse('derivations', derivationListResponseSchema), '400': BAD_RUN_ID, '404': NO_RUN },
      },
    },
    async (request, reply) => checkRunId(request.params.id, reply) ?? { derivations: await deps.runs.derivations(request.params.id) },
  );

  app.get<RunParams>(
    '/api/runs/:id/timeline',
    {
      schema: {
        operationId: 'getRunTimeline',
        summary:
          "Where a run's time went: each derivation's queue wait, copy in, build and copy out on the worker that built it, the critical path, each worker's share and the bottleneck",
        description:
          "Segments are ms since the epoch; copy in, build and copy out are the durations the worker measured, laid end to end to finish at the build's finishedAt. " +
          'The critical path runs back from the derivation that ended last through, each time, the input that ended last. ' +
          "The bottleneck is the worker that held most of that path's work (ties: the larger busy time). While the run is active, `end` is now.",
        tags: ['runs'],
        params: runParamsSchema,
        response: { '200': jsonResponse('the timeline', runTimelineSchema), '400': BAD_RUN_ID, '404': NO_RUN },
      },
    },
    async (request, reply) => checkRunId(request.params.id, reply) ?? deps.runs.timeline(request.params.id),
  );

  app.get<RunParams & { Querystring: { offset?: number; limit?: number } }>(
    '/api/runs/:id/attributes',
    {
      schema: {
        operationId: 'listRunAttributes',
        summary:
          "A jobset run's attributes, paged, each with its evaluation result (nix-eval-jobs' fields) and its build result, plus the evaluation's progress",
        tags: ['runs'],
        params: runParamsSchema,
        querystring: attributesQuerySchema,
        response: {
          '200': jsonResponse('a page of attributes', attributeListResponseSchema),
          '400': errorResponse('not a run id, a bad offset or limit, or not a jobset run (invalid-request)'),
          '404': NO_RUN,
        },
      },
    },
    async (request, reply) => {
      if (checkRunId(request.params.id, reply) !== undefined) return reply;
      const query = attributesQuerySchema.safeParse(request.query);
      if (!query.success) return sendError(reply, 400, 'invalid-request', formatZodError(query.error, 'attributes query'));
      return deps.runs.attributes(request.params.id, query.data.offset, query.data.limit);
    },
  );

  // Server-sent events from the run's durable stream; Last-Event-ID resumes where a client left off.
  app.get<RunParams & { Querystring: { after?: string } }>(
    '/api/runs/:id/events',
    {
      schema: {
        operationId: 'streamRunEvents',
        summary: "A run's events as server-sent events, from the start or a given event id, until the run finishes",
        description:
          'Each event is `id: <stream id>`, `event: <type>`, `data: <RunEvent as JSON>` (see components.schemas.RunEvent); comment lines keep the connection alive. ' +
          'The stream ends after `run-finished`. Reconnect with Last-Event-ID (or ?after=) to resume.',
        tags: ['runs'],
        params: runParamsSchema,
        querystring: eventsQuerySchema,
        headers: eventsHeadersSchema,
        response: {
          '200': eventStreamResponse('the event stream', RUN_EVENTS),
          '400': errorResponse('not a run id, or a bad after / Last-Event-ID (invalid-request)'),
          '404': NO_RUN,
        },
      },
    },
    async (request, reply) => {
      const runId = request.params.id;
      if (checkRunId(runId, reply) !== undefined) return reply;
      await deps.runs.get(runId);
      let cursor = (request.headers['last-event-id'] as string | undefined) ?? request.query.after ?? '0';
      if (!eventCursorSchema.safeParse(cursor).success)
        return sendError(reply, 400, 'invalid-request', 'after / Last-Event-ID must be a stream id like 1700000000000-0');
      const { raw, closed } = deps.streams.start(request, reply, EVENT_STREAM_HEADERS);
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
    },
  );
}
