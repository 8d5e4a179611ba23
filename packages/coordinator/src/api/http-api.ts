import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { NixfarmError, type ErrorCode } from '@nixfarm/shared';
import { httpStatusFor, sendError, sendNixfarmError } from '../http/api-errors.js';
import { registerApiAuth } from './api-auth.js';
import { registerOpenApi } from './openapi-routes.js';
import { registerApiRoutes, type ApiRoutesDeps } from './api-routes.js';
import { EventStreams } from '../http/event-streams.js';
import { registerCacheRoutes } from '../cache/cache-routes.js';
import type { BinaryCache } from '../cache/binary-cache.js';

export interface HttpApiDeps extends ApiRoutesDeps {
  bodyLimitBytes?: number;
  /** the binary cache under /cache (absent: not served) */
  cache?: BinaryCache;
  /** the binary cache needs no token */
  publicCache?: boolean;
}

const DEFAULT_BODY_LIMIT = 1024 * 1024;

function formatBytes(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : bytes % 1024 === 0 ? `${bytes / 1024} KiB` : `${bytes} bytes`;
}

/** Fastify's own refusals of a request (unparsable body, bad URL), reworded to say what to send instead. */
function describeFrameworkError(
  error: { code?: string; message: string },
  bodyLimit: number,
): { status: number; code: ErrorCode; message: string } | undefined {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return {
        status: 413,
        code: 'body-too-large',
        message: `request body is larger than the API's limit of ${bodyLimit} bytes (${formatBytes(bodyLimit)}); put a large expression in a file and send its path as file`,
      };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, code: 'invalid-request', message: 'request body is not valid JSON (or has a __proto__ or constructor key): send one JSON object' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, code: 'invalid-request', message: 'request body is empty but content-type says JSON: send a JSON object, or no content-type' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'unsupported-media-type', message: `${error.message}: send JSON with content-type: application/json` };
    case 'FST_ERR_BAD_URL':
      return { status: 400, code: 'invalid-request', message: `${error.message}: percent-encode the path correctly` };
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return { status: 414, code: 'invalid-request', message: 'a path parameter is too long: run ids are at most 40 characters' };
    default:
      return undefined;
  }
}

export function createHttpApi(deps: HttpApiDeps): FastifyInstance {
  const bodyLimit = deps.bodyLimitBytes ?? DEFAULT_BODY_LIMIT;
  const routes: string[] = [];
  const app = Fastify({
    // Per-request lines stay out of the log (they are at info); Fastify's own warnings and errors stay in.
    loggerInstance: deps.logger.child({ component: 'http' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit,
    // Bad URLs are refused by the router before any handler: in the API's error shape too.
    frameworkErrors: (error, _request, reply) => {
      const known = describeFrameworkError(error, bodyLimit) ?? { status: 400, code: 'invalid-request' as const, message: error.message };
      void sendError(reply, known.status, known.code, known.message);
    },
  });
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) if (method !== 'HEAD') routes.push(`${method} ${route.url}`);
  });

  registerApiAuth(app, { tokens: deps.tokens, logger: deps.logger.child({ component: 'http' }), publicCache: deps.publicCache === true });
  const streams = new EventStreams(app);

  app.setErrorHandler((error, _request, reply) => {
    const fastifyError = error as { statusCode?: number; code?: string; message: string };
    const known = describeFrameworkError(fastifyError, bodyLimit);
    if (known !== undefined) return sendError(reply, known.status, known.code, known.message);
    if (fastifyError.statusCode !== undefined && fastifyError.statusCode < 500 && !(error instanceof NixfarmError)) {
      return sendError(reply, fastifyError.statusCode, 'invalid-request', fastifyError.message);
    }
    const status = httpStatusFor(error);
    if (status >= 500) deps.logger.error({ err: error }, 'request failed');
    return error instanceof NixfarmError ? sendNixfarmError(reply, status, error) : sendError(reply, status, 'internal-error', fastifyError.message);
  });

  app.setNotFoundHandler((request, reply) =>
    sendError(reply, 404, 'no-such-route', `no route ${request.method} ${request.url.split('?')[0]}; the API has: ${routes.join(', ')}`),
  );

  // Routes are registered as a plugin, so the documentation plugin registered before them sees each one.
  registerOpenApi(app);
  void app.register(async (api) => registerApiRoutes(api, deps, streams, () => app.swagger()));
  // Nix's binary cache protocol, not the API: left out of the OpenAPI document, as the pages are.
  if (deps.cache !== undefined) registerCacheRoutes(app, deps.cache);

  return app;
}
