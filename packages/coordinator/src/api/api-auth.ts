import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ApiScope, Logger } from '@nixfarm/shared';
import { scopeAllows, type ApiTokens } from './api-tokens.js';

/** Routes anyone may call: liveness probes carry no token, and the API's description holds no data of the farm. */
const OPEN_ROUTES = new Set(['GET /api/health', 'HEAD /api/health', 'GET /api/openapi.json', 'HEAD /api/openapi.json']);

/** Routes that change the farm need admin; every other route (GET /metrics too: scrapers send bearer tokens) needs read. */
const ADMIN_ROUTES = new Set(['POST /api/runs', 'POST /api/runs/:id/cancel']);

export const TOKEN_HINT = "nixfarm reads it from --token, NIXFARM_TOKEN or the coordinator's state dir (NIXFARM_STATE_DIR); `nixfarm api-token --state-dir DIR --scope read|admin` on the coordinator prints one";

export interface ApiAuthOptions {
  tokens: ApiTokens;
  logger: Logger;
  /** the API's error shape */
  sendError(reply: FastifyReply, status: number, code: string, message: string): FastifyReply;
}

/** The scope a route needs, or undefined for an open one. Unknown routes need read, so the 404's route list is not public. */
export function scopeNeeded(method: string, routeUrl: string | undefined): ApiScope | undefined {
  if (routeUrl === undefined) return 'read';
  const key = `${method} ${routeUrl}`;
  if (OPEN_ROUTES.has(key)) return undefined;
  return ADMIN_ROUTES.has(key) ? 'admin' : 'read';
}

function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return undefined;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return match?.[1];
}

/**
 * Checks the bearer token before anything else runs (onRequest: before the
 * body is even parsed). The token itself is never logged.
 */
export function registerApiAuth(app: FastifyInstance, options: ApiAuthOptions): void {
  app.addHook('onRequest', async (request, reply) => {
    const needed = scopeNeeded(request.method, request.routeOptions.url);
    if (needed === undefined) return;
    const token = bearerToken(request);
    if (token === undefined) {
      return options.sendError(reply, 401, 'unauthorized', `the nixfarm API needs a token: send Authorization: Bearer <token>; ${TOKEN_HINT}`);
    }
    const held = options.tokens.scopeOf(token);
    if (held === undefined) {
      options.logger.warn({ method: request.method, url: request.url.split('?')[0], remote: request.ip }, 'API request with an unknown token refused');
      return options.sendError(reply, 401, 'unauthorized', `the token sent is not one of this coordinator's API tokens: send Authorization: Bearer <token>; ${TOKEN_HINT}`);
    }
    if (!scopeAllows(held, needed)) {
      return options.sendError(reply, 403, 'forbidden', `${request.method} ${request.routeOptions.url} needs a token with the ${needed} scope; the token sent has the ${held} scope (\`nixfarm api-token --scope ${needed}\` on the coordinator prints one)`);
    }
  });
}
