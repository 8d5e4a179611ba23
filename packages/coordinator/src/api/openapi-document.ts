import { z } from 'zod';
import {
  STORE_DIR,
  ambiguousQueryErrorSchema,
  apiErrorSchema,
  buildLogInfoSchema,
  dashboardSnapshotSchema,
  sessionRequestSchema,
  sessionResponseSchema,
  derivationListResponseSchema,
  drvPathSchema,
  farmStatusSchema,
  healthResponseSchema,
  queueListResponseSchema,
  runEventSchema,
  runListResponseSchema,
  runViewSchema,
  storePathSchema,
  submitRunRequestSchema,
  whyAnswerSchema,
  workerListResponseSchema,
} from '@nixfarm/shared';

/**
 * The coordinator's HTTP API as an OpenAPI 3.1 document, its bodies
 * generated from the same zod schemas the code parses and builds them with,
 * so the description cannot drift from the shapes. Served at
 * GET /api/openapi.json; a unit test checks every registered route is here.
 */

export type JsonSchema = Record<string, unknown>;

/** The bearer-token scopes: `read` for every GET, `admin` (which includes read) for the routes that change the farm. */
export type ApiScope = 'read' | 'admin';

export interface ApiParameter {
  name: string;
  in: 'path' | 'query' | 'header';
  required?: boolean;
  description: string;
  schema: JsonSchema;
}

export interface ApiResponse {
  description: string;
  headers?: Record<string, { description: string; schema: JsonSchema }>;
  content?: Record<string, { schema: JsonSchema }>;
}

export interface ApiOperation {
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  parameters?: ApiParameter[];
  requestBody?: { required: boolean; content: Record<string, { schema: JsonSchema }> };
  responses: Record<string, ApiResponse>;
  security: Array<Record<string, string[]>>;
  /** the scope a token needs; absent: open to everyone */
  'x-nixfarm-scope'?: ApiScope;
}

export interface OpenApiDocument {
  openapi: '3.1.0';
  info: { title: string; version: string; description: string };
  jsonSchemaDialect: string;
  tags: Array<{ name: string; description: string }>;
  paths: Record<string, Record<string, ApiOperation>>;
  components: { schemas: Record<string, JsonSchema>; securitySchemes: Record<string, JsonSchema> };
  security: Array<Record<string, string[]>>;
}

const HASH_CHARS = '0-9a-df-np-sv-z'; // Nix's base-32 alphabet: no e, o, t, u
const STORE_PATH_PATTERN = `^${STORE_DIR}/[${HASH_CHARS}]{32}-[A-Za-z0-9+._?=-]{1,211}$`;
const DRV_PATH_PATTERN = `^${STORE_DIR}/[${HASH_CHARS}]{32}-[A-Za-z0-9+._?=-]{1,207}\\.drv$`;

/**
 * zod to JSON Schema (2020-12, OpenAPI 3.1's dialect). Store paths are checked
 * by code (superRefine), which JSON Schema cannot carry: they get the grammar
 * as a pattern instead. Responses allow properties the schema does not name,
 * so a client written against this document survives additions.
 */
export function toJsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const json = z.toJSONSchema(schema, {
    target: 'draft-2020-12',
    io,
    unrepresentable: 'any',
    override: ({ zodSchema, jsonSchema }) => {
      if (zodSchema === (storePathSchema as unknown)) {
        Object.assign(jsonSchema, { pattern: STORE_PATH_PATTERN, description: `a Nix store path (${STORE_DIR}/<32-character hash>-<name>)` });
      } else if (zodSchema === (drvPathSchema as unknown)) {
        Object.assign(jsonSchema, { pattern: DRV_PATH_PATTERN, description: `a derivation path (${STORE_DIR}/<hash>-<name>.drv)` });
      }
      if (io === 'output' && jsonSchema.additionalProperties === false) delete jsonSchema.additionalProperties;
      // zod's startsWith adds a format of its own next to the pattern that says the same; validators reject unknown formats
      if (jsonSchema.format === 'starts_with') delete jsonSchema.format;
    },
  }) as JsonSchema;
  delete json.$schema;
  return json;
}

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: JsonSchema): Record<string, { schema: JsonSchema }> => ({ 'application/json': { schema } });
const error = (description: string): ApiResponse => ({ description, content: json(ref('ApiError')) });

/** Answers every authenticated route may give when the coordinator is configured with tokens. */
const AUTH_ERRORS: Record<string, ApiResponse> = {
  '401': error('no bearer token, or one the coordinator does not know'),
  '403': error('the token lacks the scope this route needs'),
};

const RUN_ID: ApiParameter = {
  name: 'id',
  in: 'path',
  required: true,
  description: 'a run id, as `nixfarm build` prints it',
  schema: { type: 'string', pattern: '^[a-z0-9]{6,40}$' },
};
const BAD_RUN_ID = error('not a run id (invalid-request)');
const NO_RUN = error('no such run (run-not-found)');

type OperationSpec = Omit<ApiOperation, 'x-nixfarm-scope' | 'security' | 'responses'> & { scope: ApiScope | 'none'; responses: Record<string, ApiResponse> };

/** Every route of the API, by method and Fastify path (`:id`); the document renders them as OpenAPI paths (`{id}`). */
export const API_OPERATIONS: ReadonlyArray<{ method: 'GET' | 'POST' | 'DELETE'; path: string; spec: OperationSpec }> = [
  {
    method: 'GET',
    path: '/api/health',
    spec: { operationId: 'health', summary: 'Liveness: answers while the coordinator serves', tags: ['farm'], scope: 'none', responses: { '200': { description: 'up', content: json(ref('Health')) } } },
  },
  {
    method: 'POST',
    path: '/api/runs',
    spec: {
      operationId: 'submitRun',
      summary: 'Start a run: evaluate a file or expression (as nix-build would) and build it on the farm',
      tags: ['runs'],
      scope: 'admin',
      requestBody: { required: true, content: json(ref('SubmitRunRequest')) },
      responses: {
        '201': { description: 'the run, evaluated and queued', content: json(ref('RunView')) },
        '400': error('the body is not a valid run request (invalid-request), or names a bad store path'),
        '413': error('the body is larger than the limit (body-too-large)'),
        '415': error('not JSON (unsupported-media-type)'),
        '422': error('evaluation failed or a derivation cannot be built by the farm'),
      },
    },
  },
  {
    method: 'GET',
    path: '/api/runs',
    spec: { operationId: 'listRuns', summary: 'The latest runs, newest first', tags: ['runs'], scope: 'read', responses: { '200': { description: 'runs', content: json(ref('RunList')) } } },
  },
  {
    method: 'GET',
    path: '/api/runs/:id',
    spec: {
      operationId: 'getRun',
      summary: 'One run: status, timestamps, results and the count of derivations per status',
      tags: ['runs'],
      scope: 'read',
      parameters: [RUN_ID],
      responses: { '200': { description: 'the run', content: json(ref('RunView')) }, '400': BAD_RUN_ID, '404': NO_RUN },
    },
  },
  {
    method: 'POST',
    path: '/api/runs/:id/cancel',
    spec: {
      operationId: 'cancelRun',
      summary: 'Cancel a run: its queued builds are dropped, running ones stopped unless another active run needs them',
      tags: ['runs'],
      scope: 'admin',
      parameters: [RUN_ID],
      responses: { '200': { description: 'the run, cancelled (or as it ended, if it had)', content: json(ref('RunView')) }, '400': BAD_RUN_ID, '404': NO_RUN },
    },
  },
  {
    method: 'GET',
    path: '/api/runs/:id/derivations',
    spec: {
      operationId: 'listRunDerivations',
      summary: "A run's derivations with their statuses, workers and timings",
      tags: ['runs'],
      scope: 'read',
      parameters: [RUN_ID],
      responses: { '200': { description: 'derivations', content: json(ref('DerivationList')) }, '400': BAD_RUN_ID, '404': NO_RUN },
    },
  },
  {
    method: 'GET',
    path: '/api/runs/:id/events',
    spec: {
      operationId: 'streamRunEvents',
      summary: "A run's events as server-sent events, from the start or a given event id, until the run finishes",
      description:
        'Each event is `id: <stream id>`, `event: <type>`, `data: <RunEvent as JSON>` (see components.schemas.RunEvent); comment lines keep the connection alive. ' +
        'The stream ends after `run-finished`. Reconnect with Last-Event-ID (or ?after=) to resume.',
      tags: ['runs'],
      scope: 'read',
      parameters: [
        RUN_ID,
        { name: 'after', in: 'query', description: 'resume after this event id (a stream id like 1700000000000-0; 0 = from the start)', schema: { type: 'string', pattern: '^\\d+-\\d+$|^0$' } },
        { name: 'Last-Event-ID', in: 'header', description: 'as after; sent by EventSource when it reconnects (wins over after)', schema: { type: 'string', pattern: '^\\d+-\\d+$|^0$' } },
      ],
      responses: {
        '200': {
          description: 'the event stream',
          content: {
            'text/event-stream': {
              schema: { type: 'string', description: 'server-sent events whose data lines are RunEvent objects', 'x-nixfarm-event-data': ref('RunEvent') },
            },
          },
        },
        '400': error('not a run id, or a bad after / Last-Event-ID (invalid-request)'),
        '404': NO_RUN,
      },
    },
  },
  {
    method: 'GET',
    path: '/api/workers',
    spec: {
      operationId: 'listWorkers',
      summary: 'Registered workers: systems, features, slots, running builds, heartbeat, draining and paused state',
      tags: ['farm'],
      scope: 'read',
      responses: { '200': { description: 'workers', content: json(ref('WorkerList')) } },
    },
  },
  {
    method: 'GET',
    path: '/api/queues',
    spec: {
      operationId: 'listQueues',
      summary: 'Build queues (one per system and feature set): jobs waiting and running',
      description: 'GET /api/status adds the system, features and oldest wait of each queue.',
      tags: ['farm'],
      scope: 'read',
      responses: { '200': { description: 'queues', content: json(ref('QueueList')) } },
    },
  },
  {
    method: 'GET',
    path: '/api/status',
    spec: {
      operationId: 'farmStatus',
      summary: 'One snapshot of queues (with oldest wait), workers, the per-system scaling signal and active runs; the numbers /metrics exports',
      tags: ['farm'],
      scope: 'read',
      responses: { '200': { description: 'the snapshot', content: json(ref('FarmStatus')) } },
    },
  },
  {
    method: 'GET',
    path: '/api/dashboard',
    spec: {
      operationId: 'dashboardSnapshot',
      summary: 'Everything the web dashboard draws, as one moment of the farm: queues, workers with their builds, running builds, recent runs and their failures',
      tags: ['farm'],
      scope: 'read',
      responses: { '200': { description: 'the snapshot', content: json(ref('DashboardSnapshot')) } },
    },
  },
  {
    method: 'GET',
    path: '/api/dashboard/events',
    spec: {
      operationId: 'streamDashboard',
      summary: 'The dashboard snapshot once a second as server-sent events (`event: snapshot`), for as long as the client stays',
      description: 'Every open stream shares one read of the farm a second. A browser authenticates with the session cookie of POST /api/session; other clients send a bearer token.',
      tags: ['farm'],
      scope: 'read',
      responses: {
        '200': {
          description: 'the event stream',
          content: { 'text/event-stream': { schema: { type: 'string', description: 'server-sent events whose data lines are DashboardSnapshot objects', 'x-nixfarm-event-data': ref('DashboardSnapshot') } } },
        },
      },
    },
  },
  {
    method: 'POST',
    path: '/api/session',
    spec: {
      operationId: 'signIn',
      summary: "A browser's sign-in: trades an API token for an HttpOnly, SameSite=Strict cookie",
      description: 'The cookie authorises GET and HEAD requests only (the dashboard, /queues, logs and the API reads), never a change, so another site cannot act with it.',
      tags: ['farm'],
      scope: 'none',
      requestBody: { required: true, content: json(ref('SessionRequest')) },
      responses: {
        '200': { description: 'signed in; the answer names the scope of the token', headers: { 'set-cookie': { description: 'the session cookie nixfarm_token', schema: { type: 'string' } } }, content: json(ref('SessionResponse')) },
        '400': error('no token in the body (invalid-request)'),
        '401': error("not one of this coordinator's tokens (unauthorized)"),
      },
    },
  },
  {
    method: 'DELETE',
    path: '/api/session',
    spec: {
      operationId: 'signOut',
      summary: 'Signs the browser out: clears the session cookie',
      tags: ['farm'],
      scope: 'none',
      responses: { '204': { description: 'signed out', headers: { 'set-cookie': { description: 'the cleared cookie', schema: { type: 'string' } } } } },
    },
  },
  {
    method: 'GET',
    path: '/metrics',
    spec: {
      operationId: 'metrics',
      summary: "Prometheus metrics: the farm's gauges and histograms, then BullMQ's per-queue export",
      tags: ['farm'],
      scope: 'read',
      responses: { '200': { description: 'Prometheus text exposition (version 0.0.4)', content: { 'text/plain': { schema: { type: 'string' } } } } },
    },
  },
  {
    method: 'GET',
    path: '/api/why',
    spec: {
      operationId: 'why',
      summary: 'Why a derivation is where it is (`nixfarm why`): its inputs, the workers that could take it and why they have not',
      tags: ['derivations'],
      scope: 'read',
      parameters: [{ name: 'path', in: 'query', required: true, description: 'a .drv path, an output path or a hash prefix', schema: { type: 'string', minLength: 1 } }],
      responses: {
        '200': { description: 'the explanation', content: json(ref('WhyAnswer')) },
        '400': error('no path, or not a store path or hash prefix'),
        '404': error('no derivation known for it (derivation-not-found)'),
        '409': { description: 'a prefix matching several derivations', content: json(ref('AmbiguousQueryError')) },
      },
    },
  },
  {
    method: 'GET',
    path: '/api/logs',
    spec: {
      operationId: 'buildLog',
      summary: "A derivation's build log: live while it builds, else the stored file",
      description: 'Give exactly one of path or run (with attr when the run built several derivations). With follow=1 the text streams until the build ends; ask for text/event-stream to get it as server-sent events (a browser\'s EventSource).',
      tags: ['derivations'],
      scope: 'read',
      parameters: [
        { name: 'path', in: 'query', description: 'a .drv path, an output path or a hash prefix', schema: { type: 'string', minLength: 1, maxLength: 1000 } },
        { name: 'run', in: 'query', description: "a run id: the log of that run's derivation", schema: { type: 'string', pattern: '^[a-z0-9]{6,40}$' } },
        { name: 'attr', in: 'query', description: 'with run: the attribute whose derivation is meant', schema: { type: 'string', maxLength: 1024 } },
        { name: 'follow', in: 'query', description: '1: keep the response open and stream the log as the build writes it', schema: { type: 'string', enum: ['0', '1'] } },
        { name: 'info', in: 'query', description: '1: answer JSON about the log (source, live, complete, attempts, stored file) instead of its text', schema: { type: 'string', enum: ['0', '1'] } },
      ],
      responses: {
        '200': {
          description: 'the log text, empty when the build printed nothing (info=1: JSON about it)',
          headers: {
            'x-nixfarm-drv-path': { description: 'the derivation the query resolved to', schema: { type: 'string' } },
            'x-nixfarm-log-complete': { description: 'false when a worker stopped reporting mid-build (not sent with follow=1)', schema: { type: 'string', enum: ['true', 'false'] } },
            'x-nixfarm-log-live': { description: 'true while the build runs: an empty log then means nothing printed yet (not sent with follow=1)', schema: { type: 'string', enum: ['true', 'false'] } },
          },
          content: {
            'text/plain': { schema: { type: 'string' } },
            'application/json': { schema: ref('BuildLogInfo') },
            'text/event-stream': {
              schema: { type: 'string', description: 'with follow=1 and Accept: text/event-stream: `event: log` whose data is a JSON string of log text, then `event: end` with {"status"} when the build ends' },
            },
          },
        },
        '400': error('not a valid log query (invalid-request)'),
        '404': error('no such derivation, or the run has no result for that attribute; log-not-found: the derivation is known but has no log (not built yet, or never built here)'),
        '409': { description: 'a prefix matching several derivations', content: json(ref('AmbiguousQueryError')) },
      },
    },
  },
  {
    method: 'GET',
    path: '/api/openapi.json',
    spec: {
      operationId: 'openApiDocument',
      summary: 'This document',
      tags: ['farm'],
      scope: 'none',
      responses: { '200': { description: 'the OpenAPI 3.1 document', content: json({ type: 'object' }) } },
    },
  },
];

/** Named schemas: requests as clients send them (defaults optional), responses as the coordinator sends them. */
function componentSchemas(): Record<string, JsonSchema> {
  const responses: Record<string, z.ZodType> = {
    Health: healthResponseSchema,
    RunView: runViewSchema,
    RunList: runListResponseSchema,
    DerivationList: derivationListResponseSchema,
    RunEvent: runEventSchema,
    WorkerList: workerListResponseSchema,
    QueueList: queueListResponseSchema,
    FarmStatus: farmStatusSchema,
    WhyAnswer: whyAnswerSchema,
    BuildLogInfo: buildLogInfoSchema,
    ApiError: apiErrorSchema,
    AmbiguousQueryError: ambiguousQueryErrorSchema,
    DashboardSnapshot: dashboardSnapshotSchema,
    SessionResponse: sessionResponseSchema,
  };
  const schemas: Record<string, JsonSchema> = {
    // The request's refinement (exactly one of file or expr) is code; oneOf says the same in JSON Schema.
    SubmitRunRequest: { ...toJsonSchema(submitRunRequestSchema, 'input'), oneOf: [{ required: ['file'] }, { required: ['expr'] }] },
    SessionRequest: toJsonSchema(sessionRequestSchema, 'input'),
  };
  for (const [name, schema] of Object.entries(responses)) schemas[name] = toJsonSchema(schema, 'output');
  return schemas;
}

/** `/api/runs/:id` as OpenAPI writes it: `/api/runs/{id}`. */
export function openApiPath(fastifyPath: string): string {
  return fastifyPath.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');
}

export function buildOpenApiDocument(version = '0.1.0'): OpenApiDocument {
  const paths: OpenApiDocument['paths'] = {};
  for (const { method, path, spec } of API_OPERATIONS) {
    const { scope, responses, ...rest } = spec;
    // Routes open to everyone override the document-wide requirement with an empty one.
    const operation: ApiOperation =
      scope === 'none'
        ? { ...rest, responses, security: [] }
        : { ...rest, responses: { ...responses, ...AUTH_ERRORS }, security: [{ bearerAuth: [scope] }], 'x-nixfarm-scope': scope };
    (paths[openApiPath(path)] ??= {})[method.toLowerCase()] = operation;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'nixfarm coordinator',
      version,
      description: 'Runs and their derivations, workers, queues, build logs and metrics of a nixfarm build farm. Errors are {"error": {"code", "message"}}.',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    tags: [
      { name: 'runs', description: 'builds submitted with `nixfarm build`, their derivations and events' },
      { name: 'derivations', description: 'one derivation: why it waits, its build log' },
      { name: 'farm', description: 'workers, queues, status and metrics' },
    ],
    paths,
    components: {
      schemas: componentSchemas(),
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          description:
            'A token from the coordinator\'s configuration, sent as "Authorization: Bearer <token>". A token has one scope: ' +
            '`read` (every GET route) or `admin` (read, plus POST /api/runs and POST /api/runs/{id}/cancel). ' +
            "Each operation's security entry and x-nixfarm-scope name the scope it needs.",
        },
      },
    },
    security: [{ bearerAuth: ['read'] }],
  };
}
