import type { FastifyInstance } from 'fastify';
import { HISTORY_RANGES, formatZodError, historyQuerySchema, historyResponseSchema, type HistoryResponse } from '@nixfarm/shared';
import { sendError } from '../http/api-errors.js';
import { errorResponse, jsonResponse } from '../http/openapi-components.js';
import type { FarmHistoryStore } from './farm-history-store.js';

export interface HistoryRoutesDeps {
  store: Pick<FarmHistoryStore, 'since'>;
  intervalSeconds: number;
}

/** GET /api/history: the farm's recent samples, for the dashboard's charts. */
export function registerHistoryRoutes(app: FastifyInstance, deps: HistoryRoutesDeps): void {
  app.get<{ Querystring: { range?: string } }>(
    '/api/history',
    {
      schema: {
        operationId: 'farmHistory',
        summary:
          "The farm's history over a range (15m, 1h, 6h or 24h; default 1h), oldest first: per sample the queues, workers up and the scaling signal per system, and the builds ended since the sample before by status",
        description:
          'The coordinator takes a sample every --history-interval-seconds (default 10) and keeps 24 h of them in Redis, at most 8640; builds finished per minute are finished × 60 / intervalSeconds.',
        tags: ['farm'],
        querystring: historyQuerySchema,
        response: {
          '200': jsonResponse('the samples', historyResponseSchema),
          '400': errorResponse(`range is not one of ${Object.keys(HISTORY_RANGES).join(', ')} (invalid-request)`),
        },
      },
    },
    async (request, reply): Promise<HistoryResponse | typeof reply> => {
      const query = historyQuerySchema.safeParse(request.query);
      if (!query.success) return sendError(reply, 400, 'invalid-request', formatZodError(query.error, 'history query'));
      const { range } = query.data;
      const span = HISTORY_RANGES[range];
      const samples = await deps.store.since(Date.now() - span * 1000, span);
      return { range, intervalSeconds: deps.intervalSeconds, samples };
    },
  );
}
