import type { FastifyInstance } from 'fastify';
import { buildOpenApiDocument, type OpenApiDocument } from './openapi-document.js';

/** GET /api/openapi.json: the API's OpenAPI 3.1 document, built once (it depends on nothing at run time). */
export function registerOpenApiRoutes(app: FastifyInstance): void {
  let document: OpenApiDocument | undefined;
  app.get('/api/openapi.json', async () => (document ??= buildOpenApiDocument()));
}
