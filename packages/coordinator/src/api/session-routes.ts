import type { FastifyInstance, FastifyRequest } from 'fastify';
import { formatZodError, sessionRequestSchema, type Logger } from '@nixfarm/shared';
import { SESSION_COOKIE, TOKEN_HINT } from './api-auth.js';
import type { ApiTokens } from './api-tokens.js';
import { sendError } from './api-errors.js';

export interface SessionRoutesDeps {
  tokens: ApiTokens;
  logger: Logger;
}

/** A week: long enough not to sign in each morning, short enough that a forgotten browser lets go. */
const SESSION_SECONDS = 7 * 24 * 3600;

function cookie(request: FastifyRequest, value: string, maxAgeSeconds: number): string {
  // HttpOnly: page scripts never see the token; SameSite=Strict: other sites' pages do not send it.
  const secure = request.protocol === 'https' ? '; Secure' : '';
  return `${SESSION_COOKIE}=${encodeURIComponent(value)}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${secure}`;
}

/**
 * Browser sign-in for the dashboard: POST /api/session with an API token
 * sets it as an HttpOnly cookie, which the auth hook accepts for GET and HEAD
 * only; DELETE /api/session signs out.
 */
export function registerSessionRoutes(app: FastifyInstance, deps: SessionRoutesDeps): void {
  app.post('/api/session', async (request, reply) => {
    const parsed = sessionRequestSchema.safeParse(request.body);
    if (!parsed.success) return sendError(reply, 400, 'invalid-request', formatZodError(parsed.error, 'session request'));
    const scope = deps.tokens.scopeOf(parsed.data.token);
    if (scope === undefined) {
      deps.logger.warn({ remote: request.ip }, 'dashboard sign-in with an unknown token refused');
      return sendError(reply, 401, 'unauthorized', `that is not one of this coordinator's API tokens; ${TOKEN_HINT}`);
    }
    return reply.header('set-cookie', cookie(request, parsed.data.token, SESSION_SECONDS)).send({ scope });
  });

  app.delete('/api/session', async (request, reply) => reply.header('set-cookie', cookie(request, '', 0)).code(204).send());
}
