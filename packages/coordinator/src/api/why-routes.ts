import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { whyAnswerSchema } from '@nixfarm/shared';
import type { WhyService } from '../explain/index.js';
import { sendError } from '../http/api-errors.js';
import { ambiguousResponse, errorResponse, jsonResponse } from '../http/openapi-components.js';

export interface WhyRoutesDeps {
  why: Pick<WhyService, 'explain'>;
}

/** One path, not blank; given twice it is a list, and refused. */
const whyQuerySchema = z.object({
  path: z
    .string()
    .min(1)
    .refine((path) => path.trim() !== '')
    .describe('a .drv path, an output path or a hash prefix'),
});

/**
 * `nixfarm why`: GET /api/why?path= explains one derivation (a .drv path, an output path or a hash prefix).
 * 200 explained; 400 not a store path or hash prefix; 404 unknown; 409 an ambiguous prefix (candidates listed).
 */
export function registerWhyRoutes(app: FastifyInstance, deps: WhyRoutesDeps): void {
  app.get<{ Querystring: { path?: string } }>(
    '/api/why',
    {
      schema: {
        operationId: 'why',
        summary: 'Why a derivation is where it is (`nixfarm why`): its inputs, the workers that could take it and why they have not',
        tags: ['derivations'],
        querystring: whyQuerySchema,
        response: {
          '200': jsonResponse('the explanation', whyAnswerSchema),
          '400': errorResponse('no path, or not a store path or hash prefix'),
          '404': errorResponse('no derivation known for it (derivation-not-found)'),
          '409': ambiguousResponse,
        },
      },
    },
    async (request, reply) => {
      if (!whyQuerySchema.safeParse(request.query).success)
        return sendError(reply, 400, 'invalid-request', 'give ?path= a .drv path, an output path or a hash prefix');
      // Unknown (404) and ambiguous (409, with the candidates) are the error handler's.
      return deps.why.explain(request.query.path!);
    },
  );
}
