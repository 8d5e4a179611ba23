import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { FastifyInstance } from 'fastify';
import { dashboardSnapshotSchema, type DashboardSnapshot } from '@nixfarm/shared';
import type { DashboardFeed } from './dashboard-feed.js';
import { EVENT_STREAM_HEADERS, type EventStreams } from '../http/event-streams.js';
import { sendError } from '../http/api-errors.js';
import { eventStreamResponse, eventStreamSchema, jsonResponse } from '../http/openapi-components.js';

export interface DashboardRoutesDeps {
  feed: Pick<DashboardFeed, 'snapshot' | 'subscribe'>;
  streams: EventStreams;
}

/** The page and its files, shipped beside the compiled code (packages/coordinator/dashboard). */
const ASSET_DIR = new URL('../../dashboard/', import.meta.url);
const ASSETS: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
  'logo.svg': 'image/svg+xml',
  'charts.js': 'text/javascript; charset=utf-8',
  'history.js': 'text/javascript; charset=utf-8',
  'timeline.js': 'text/javascript; charset=utf-8',
};

/** The chart library, served straight from its npm package (a dependency of this one), so a release needs no copy of it. */
const require = createRequire(import.meta.url);
const VENDOR_ASSETS: Record<string, { file: string; type: string }> = {
  'uPlot.esm.js': { file: require.resolve('uplot/dist/uPlot.esm.js'), type: 'text/javascript; charset=utf-8' },
  'uPlot.min.css': { file: require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

/** The page's own rules: its scripts and styles from this origin only, no inline script, no framing. */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

const SNAPSHOTS = eventStreamSchema('server-sent events whose data lines are DashboardSnapshot objects', dashboardSnapshotSchema);

/**
 * The web dashboard: GET / (the page; GET /runs/:id is the same page showing
 * that run's timeline), GET /dashboard/:asset (its scripts,
 * styles and logo), GET /api/dashboard (one snapshot) and
 * GET /api/dashboard/events (a snapshot a second as server-sent events, so
 * the page updates without reloads).
 */
export function registerDashboardRoutes(app: FastifyInstance, deps: DashboardRoutesDeps): void {
  // Read once: the files are part of the release, and a missing one should fail at start, not on a visit.
  const page = readFileSync(new URL('index.html', ASSET_DIR), 'utf8');
  const assets = new Map(Object.entries(ASSETS).map(([name, type]) => [name, { type, body: readFileSync(new URL(name, ASSET_DIR)) }]));
  for (const [name, { file, type }] of Object.entries(VENDOR_ASSETS)) assets.set(name, { type, body: readFileSync(file) });

  app.get('/', async (_request, reply) => reply.headers(PAGE_HEADERS).type('text/html; charset=utf-8').send(page));
  // A run's timeline is the same page: it reads the run id from its address (timeline.js).
  app.get('/runs/:id', async (_request, reply) => reply.headers(PAGE_HEADERS).type('text/html; charset=utf-8').send(page));

  app.get<{ Params: { asset: string } }>('/dashboard/:asset', async (request, reply) => {
    const asset = assets.get(request.params.asset);
    if (asset === undefined) {
      return sendError(reply, 404, 'no-such-route', `no dashboard file ${request.params.asset}; it has ${[...assets.keys()].join(', ')}`);
    }
    return reply.headers(PAGE_HEADERS).type(asset.type).send(asset.body);
  });

  app.get(
    '/api/dashboard',
    {
      schema: {
        operationId: 'dashboardSnapshot',
        summary:
          'Everything the web dashboard draws, as one moment of the farm: queues, workers with their builds, running builds, recent runs and their failures',
        tags: ['farm'],
        response: { '200': jsonResponse('the snapshot', dashboardSnapshotSchema) },
      },
    },
    async () => deps.feed.snapshot(),
  );

  const eventsSchema = {
    operationId: 'streamDashboard',
    summary: 'The dashboard snapshot once a second as server-sent events (`event: snapshot`), for as long as the client stays',
    description:
      'Every open stream shares one read of the farm a second. A browser authenticates with the session cookie of POST /api/session; other clients send a bearer token.',
    tags: ['farm'],
    response: { '200': eventStreamResponse('the event stream', SNAPSHOTS) },
  };
  app.get('/api/dashboard/events', { schema: eventsSchema }, async (request, reply) => {
    const { raw, closed } = deps.streams.start(request, reply, EVENT_STREAM_HEADERS);
    // EventSource reconnects by itself after this long if the coordinator goes away.
    raw.write('retry: 2000\n\n');
    const unsubscribe = deps.feed.subscribe((snapshot: DashboardSnapshot) => raw.write(`event: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`));
    const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), 15_000);
    closed.addEventListener(
      'abort',
      () => {
        clearInterval(keepAlive);
        unsubscribe();
      },
      { once: true },
    );
  });
}
