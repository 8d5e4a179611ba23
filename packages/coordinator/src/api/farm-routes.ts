import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { forgottenWorkerResponseSchema, healthResponseSchema, queueListResponseSchema, workerListResponseSchema } from '@nixfarm/shared';
import type { WorkerDirectory } from '../dispatch/worker-directory.js';
import type { BuildQueues } from '../dispatch/build-queues.js';
import { errorResponse, jsonResponse } from '../http/openapi-components.js';

/** GET /api/health: liveness, no token. */
export function registerHealthRoute(app: FastifyInstance): void {
  app.get(
    '/api/health',
    {
      schema: {
        operationId: 'health',
        summary: 'Liveness: answers while the coordinator serves',
        tags: ['farm'],
        response: { '200': jsonResponse('up', healthResponseSchema) },
      },
    },
    async () => ({ ok: true }),
  );
}

/** GET /api/workers: the registered workers; DELETE /api/workers/:name forgets a gone one. */
export function registerWorkersRoute(app: FastifyInstance, deps: { workers: WorkerDirectory }): void {
  app.get(
    '/api/workers',
    {
      schema: {
        operationId: 'listWorkers',
        summary: 'Registered workers: systems, features, slots, running builds, heartbeat, draining and paused state',
        tags: ['farm'],
        response: { '200': jsonResponse('workers', workerListResponseSchema) },
      },
    },
    async () => ({ workers: await deps.workers.list() }),
  );

  const workerParamsSchema = z.object({ name: z.string().describe('a worker name, as `nixfarm workers` lists it') });
  app.delete<{ Params: { name: string } }>(
    '/api/workers/:name',
    {
      schema: {
        operationId: 'forgetWorker',
        summary: 'Forget a gone worker: take it out of the registry (the listing, the dashboard, the metrics and their alerts)',
        description:
          'For a worker that will not come back (killed, its machine lost): one that stops cleanly leaves by itself. ' +
          'A worker whose heartbeat is fresh is refused. Its name stays bound to its worker key; builds it held are requeued when their locks lapse, forgotten or not. If it comes back, its heartbeat registers it again.',
        tags: ['farm'],
        params: workerParamsSchema,
        response: {
          '200': jsonResponse('the worker, as it was last listed', forgottenWorkerResponseSchema),
          '404': errorResponse('no worker of that name is registered; the message lists those that are (worker-not-found)'),
          '409': errorResponse('the worker is alive: its heartbeat is fresh (worker-alive)'),
        },
      },
    },
    async (request) => {
      const lastSeen = await deps.workers.forget(request.params.name);
      return { name: request.params.name, ...(lastSeen === undefined ? {} : { lastSeen }) };
    },
  );
}

/** GET /api/queues: jobs waiting and running per build queue. */
export function registerQueuesRoute(app: FastifyInstance, deps: { queues: BuildQueues }): void {
  app.get(
    '/api/queues',
    {
      schema: {
        operationId: 'listQueues',
        summary: 'Build queues (one per system and feature set): jobs waiting and running',
        description: 'GET /api/status adds the system, features and oldest wait of each queue.',
        tags: ['farm'],
        response: { '200': jsonResponse('queues', queueListResponseSchema) },
      },
    },
    async () => {
      const names = await deps.queues.names();
      const queues = [];
      for (const name of names) {
        const counts = await deps.queues.queue(name).getJobCounts('waiting', 'prioritized', 'active', 'delayed');
        queues.push({ name, waiting: (counts.waiting ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0), running: counts.active ?? 0 });
      }
      return { queues };
    },
  );
}
