import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { farmStatusSchema, type Logger } from '@nixfarm/shared';
import type { BuildQueues } from '../dispatch/build-queues.js';
import type { WorkerDirectory } from '../dispatch/worker-directory.js';
import type { FarmMetrics } from '../metrics/farm-metrics.js';
import type { FarmStatusCollector } from '../metrics/farm-status-collector.js';
import { jsonResponse, textSchema } from '../http/openapi-components.js';

export interface MetricsRoutesDeps {
  metrics: FarmMetrics;
  /** the snapshot both routes read (and the dashboard too) */
  status: FarmStatusCollector;
  redis: Redis;
  queues: BuildQueues;
  workers: WorkerDirectory;
  logger: Logger;
}

/**
 * GET /metrics: Prometheus text, our registry (gauges set from one status
 * snapshot) followed by BullMQ's own export of each queue.
 * GET /api/status: the same snapshot as JSON, for `nixfarm status`.
 */
export function registerMetricsRoutes(app: FastifyInstance, deps: MetricsRoutesDeps): void {
  const { status } = deps;
  app.get(
    '/api/status',
    {
      schema: {
        operationId: 'farmStatus',
        summary: 'One snapshot of queues (with oldest wait), workers, the per-system scaling signal and active runs; the numbers /metrics exports',
        tags: ['farm'],
        response: { '200': jsonResponse('the snapshot', farmStatusSchema) },
      },
    },
    async () => status.collect(),
  );

  const metricsSchema = {
    operationId: 'metrics',
    summary: "Prometheus metrics: the farm's gauges and histograms, then BullMQ's per-queue export",
    tags: ['farm'],
    response: { '200': { description: 'Prometheus text exposition (version 0.0.4)', content: { 'text/plain': { schema: textSchema() } } } },
  };
  app.get('/metrics', { schema: metricsSchema }, async (_request, reply) => {
    const snapshot = await status.collect();
    deps.metrics.setStatus(snapshot);
    const ours = await deps.metrics.registry.metrics();
    const bullmq = await Promise.all(
      snapshot.queues.map((q) =>
        deps.queues
          .queue(q.name)
          .exportPrometheusMetrics()
          .catch((error: unknown) => {
            // One queue's export failing must not cost the scrape everything else.
            deps.logger.warn({ queue: q.name, err: error }, 'BullMQ metrics export failed');
            return '';
          }),
      ),
    );
    return reply.type(deps.metrics.registry.contentType).send(`${ours}${mergeExports(bullmq)}`);
  });
}

/**
 * BullMQ exports each queue with its own # HELP and # TYPE lines; in one
 * exposition a family is announced once and its samples stand together, so
 * the lines are grouped by metric name.
 */
function mergeExports(exports: readonly string[]): string {
  const families = new Map<string, { header: string[]; samples: string[] }>();
  for (const text of exports) {
    for (const line of text.split('\n')) {
      const name = line.startsWith('#') ? line.split(' ')[2] : /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(line)?.[0];
      if (name === undefined) continue;
      let family = families.get(name);
      if (family === undefined) families.set(name, (family = { header: [], samples: [] }));
      if (!line.startsWith('#')) family.samples.push(line);
      else if (!family.header.includes(line)) family.header.push(line);
    }
  }
  return [...families.values()].map((f) => `${[...f.header, ...f.samples].join('\n')}\n`).join('');
}
