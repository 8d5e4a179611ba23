import type { FastifyInstance } from 'fastify';
import { healthResponseSchema, queueListResponseSchema, workerListResponseSchema } from '@nixfarm/shared';
import type { WorkerDirectory } from '../dispatch/worker-directory.js';
import type { BuildQueues } from '../dispatch/build-queues.js';
import { jsonResponse } from '../http/openapi-components.js';

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

/** GET /api/workers: the registered workers. */
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
