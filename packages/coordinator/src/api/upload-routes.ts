import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { formatZodError, pushRequestSchema, runIdSchema, uploadListResponseSchema } from '@nixfarm/shared';
import type { UploadQueue } from '../uploads/upload-queue.js';
import type { RunPush } from '../uploads/run-push.js';
import type { RunService } from '../runs/run-service.js';
import { sendError } from '../http/api-errors.js';
import { errorResponse, jsonResponse } from '../http/openapi-components.js';

export interface UploadRoutesDeps {
  runs: Pick<RunService, 'get'>;
  uploads: { queue: Pick<UploadQueue, 'ofRun' | 'summary'>; push: RunPush };
}

const runParamsSchema = z.object({ id: runIdSchema.describe('a run id, as `nixfarm build` prints it') });
type RunParams = { Params: { id: string } };
const NO_RUN = errorResponse('no such run (run-not-found)');

/** A run's uploads to external caches: GET lists each output's state per cache, POST pushes the run to more caches. */
export function registerUploadRoutes(app: FastifyInstance, deps: UploadRoutesDeps): void {
  app.get<RunParams>(
    '/api/runs/:id/uploads',
    {
      schema: {
        operationId: 'listRunUploads',
        summary: "A run's uploads to external caches: per output and cache, pending, uploaded, retrying (with the last error) or given up",
        tags: ['runs'],
        params: runParamsSchema,
        response: { '200': jsonResponse('uploads', uploadListResponseSchema), '400': errorResponse('not a run id (invalid-request)'), '404': NO_RUN },
      },
    },
    async (request) => {
      await deps.runs.get(request.params.id);
      return { uploads: await deps.uploads.queue.ofRun(request.params.id) };
    },
  );

  app.post<RunParams>(
    '/api/runs/:id/uploads',
    {
      schema: {
        operationId: 'pushRun',
        summary: "Upload a run's outputs (those still in the coordinator's store, with their closures and signatures) to these caches",
        tags: ['runs'],
        params: runParamsSchema,
        body: pushRequestSchema,
        response: {
          '202': jsonResponse("the run's uploads, the new ones pending", uploadListResponseSchema),
          '400': errorResponse('not a run id, or a cache URL that does not parse or has an unknown scheme (invalid-request, invalid-cache-url)'),
          '404': NO_RUN,
          '422': errorResponse('a file:// cache directory cannot be written (cache-unwritable)'),
        },
      },
    },
    async (request, reply) => {
      const parsed = pushRequestSchema.safeParse(request.body);
      if (!parsed.success) return sendError(reply, 400, 'invalid-request', formatZodError(parsed.error, 'push request'));
      const uploads = await deps.uploads.push.push(request.params.id, parsed.data.targets);
      return reply.code(202).send({ uploads });
    },
  );
}
