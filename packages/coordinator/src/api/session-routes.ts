import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { formatZodError, sessionRequestSchema, sessionResponseSchema, type Logger } from '@nixfarm/shared';
import { SESSION_COOKIE, TOKEN_HINT } from './api-auth.js';
import type { ApiTokens } from './api-tokens.js';
import { sendError } from '../http/api-errors.js';
import { errorResponse, jsonResponse } from '../http/openapi-components.js';

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
  app.post(
    '/api/session',
    {
      schema: {
        operationId: 'signIn',
        summary: "A browser's sign-in: trades an API token for an HttpOnly, SameSite=Strict cookie",
        description:
          'The cookie authorises GET and HEAD requests only (the dashboard, /queues, logs and the API reads), never a change, so another site cannot act with it.',
        tags: ['farm'],
        body: sessionRequestSchema,
        response: {
          '200': {
            ...jsonResponse('signed in; the answer names the scope of the token', sessionResponseSchema),
            headers: { 'set-cookie': z.string().describe(`the session cookie ${SESSION_COOKIE}`) },
          },
          '400': errorResponse('no token in the body (invalid-request)'),
          '401': errorResponse("not one of this coordinator's tokens (unauthorized)"),
        },
      },
    },
    async (request, reply) => {
      const parsed = sessionRequestSchema.safeParse(request.body);
      if (!parsed.success) return sendError(reply, 400, 'invalid-request', formatZodError(parsed.error, 'session request'));
      const scope = deps.tokens.scopeOf(parsed.data.token);
      if (scope === undefined) {
        deps.logger.warn({ remote: request.ip }, 'dashboard sign-in with an unknown token refused');
        return sendError(reply, 401, 'unauthorized', `that is not one of this coordinator's API tokens; ${TOKEN_HINT}`);
      }
      return reply.header('set-cookie', cookie(request, parsed.data.token, SESSION_SECONDS)).send({ scope });
    },
  );

  app.delete(
    '/api/session',
    {
      schema: {
        operationId: 'signOut',
        summary: 'Signs the browser out: clears the session cookie',
        tags: ['farm'],
        response: { '204': { description: 'signed out', headers: { 'set-cookie': z.string().describe('the cleared cookie') } } },
      },
    },
    async (request, reply) =>
      reply
        .header('set-cookie', cookie(request, '', 0))
        .code(204)
        .send(),
  );
}
