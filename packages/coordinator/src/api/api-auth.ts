import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ApiScope, Logger } from '@nixfarm/shared';
import { scopeAllows, type ApiTokens } from './api-tokens.js';
import { sendError } from '../http/api-errors.js';
import { CACHE_PREFIX } from '../cache/cache-routes.js';

/**
 * Routes anyone may call: liveness probes carry no token, the API's
 * description and the dashboard's page and scripts hold no data of the farm,
 * and the session routes check the token they are given themselves.
 */
const OPEN_ROUTES = new Set([
  'GET /api/health',
  'HEAD /api/health',
  'GET /api/openapi.json',
  'HEAD /api/openapi.json',
  'GET /',
  'HEAD /',
  'GET /runs/:id',
  'HEAD /runs/:id',
  'GET /dashboard/:asset',
  'HEAD /dashboard/:asset',
  'POST /api/session',
  'DELETE /api/session',
]);

/** The cookie POST /api/session sets: the browser's copy of its token, sent with the dashboard's own requests. */
export const SESSION_COOKIE = 'nixfarm_token';

/** Routes that change the farm need admin; every other route (GET /metrics too: scrapers send bearer tokens) needs read. */
const ADMIN_ROUTES = new Set(['POST /api/runs', 'POST /api/runs/:id/cancel', 'POST /api/runs/:id/uploads', 'DELETE /api/workers/:name']);

export const TOKEN_HINT =
  "nixfarm reads it from --token, NIXFARM_TOKEN or the coordinator's state dir (NIXFARM_STATE_DIR); `nixfarm api-token --state-dir DIR --scope read|admin` on the coordinator prints one";

export interface ApiAuthOptions {
  tokens: ApiTokens;
  logger: Logger;
  /** the binary cache needs no token (--public-cache) */
  publicCache?: boolean;
}

/** Whether a route is the binary cache's: Nix reads it, with its token (if any) from a netrc file, so as HTTP Basic auth. */
function isCacheRoute(routeUrl: string | undefined): boolean {
  return routeUrl?.startsWith(`${CACHE_PREFIX}/`) === true;
}

/** The scope a route needs, or undefined for an open one. Unknown routes need read, so the 404's route list is not public. */
export function scopeNeeded(method: string, routeUrl: string | undefined): ApiScope | undefined {
  if (routeUrl === undefined) return 'read';
  const key = `${method} ${routeUrl}`;
  if (OPEN_ROUTES.has(key)) return undefined;
  // The raw queue view is mounted read-only; its API's changing routes (retry, clean, obliterate) would bypass the coordinator's graph.
  if (routeUrl.startsWith('/queues') && !SAFE_METHODS.has(method)) return 'admin';
  return ADMIN_ROUTES.has(key) ? 'admin' : 'read';
}

const SAFE_METHODS = new Set(['GET', 'HEAD']);

/** The value of one cookie in a Cookie header, or undefined. */
function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    try {
      return decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/**
 * The token a request presents: its bearer header, or for a GET or HEAD the
 * session cookie. A cookie is sent by the browser on its own, so it never
 * authorises a request that changes anything (no cross-site request forgery).
 */
function presentedToken(request: FastifyRequest): string | undefined {
  const bearer = bearerToken(request);
  if (bearer !== undefined) return bearer;
  if (isCacheRoute(request.routeOptions.url)) return basicPassword(request);
  return SAFE_METHODS.has(request.method) ? cookieValue(request.headers.cookie, SESSION_COOKIE) : undefined;
}

/** A browser opening a page (not a script fetching data) is sent to the dashboard's sign-in instead of a JSON error. */
function wantsPage(request: FastifyRequest): boolean {
  return SAFE_METHODS.has(request.method) && /\btext\/html\b/.test(request.headers.accept ?? '') && !request.url.startsWith('/api/');
}

function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return undefined;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return match?.[1];
}

/** The password of HTTP Basic auth (the user name is anything): how Nix sends the token it finds in its netrc file. */
function basicPassword(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  const encoded = typeof header === 'string' ? /^Basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i.exec(header)?.[1] : undefined;
  if (encoded === undefined) return undefined;
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 || colon === decoded.length - 1 ? undefined : decoded.slice(colon + 1);
}

/**
 * Checks the bearer token before anything else runs (onRequest: before the
 * body is even parsed). The token itself is never logged.
 */
export function registerApiAuth(app: FastifyInstance, options: ApiAuthOptions): void {
  app.addHook('onRequest', async (request, reply) => {
    const cache = isCacheRoute(request.routeOptions.url);
    if (cache && options.publicCache === true) return;
    const needed = scopeNeeded(request.method, request.routeOptions.url);
    if (needed === undefined) return;
    const token = presentedToken(request);
    // The challenge makes clients that wait for one (curl without preemptive auth) send their netrc credentials.
    if (cache && token === undefined) {
      void reply.header('www-authenticate', 'Basic realm="nixfarm binary cache"');
      return sendError(
        reply,
        401,
        'unauthorized',
        `the nixfarm binary cache needs the read token as the password of a netrc entry for this host (or start the coordinator with --public-cache); ${TOKEN_HINT}`,
      );
    }
    if (token === undefined && wantsPage(request)) return reply.redirect(`/?next=${encodeURIComponent(request.url)}`, 303);
    if (token === undefined) {
      return sendError(reply, 401, 'unauthorized', `the nixfarm API needs a token: send Authorization: Bearer <token>; ${TOKEN_HINT}`);
    }
    const held = options.tokens.scopeOf(token);
    if (held === undefined) {
      options.logger.warn({ method: request.method, url: request.url.split('?')[0], remote: request.ip }, 'API request with an unknown token refused');
      return sendError(
        reply,
        401,
        'unauthorized',
        `the token sent is not one of this coordinator's API tokens: send Authorization: Bearer <token>; ${TOKEN_HINT}`,
      );
    }
    if (!scopeAllows(held, needed)) {
      return sendError(
        reply,
        403,
        'forbidden',
        `${request.method} ${request.routeOptions.url} needs a token with the ${needed} scope; the token sent has the ${held} scope (\`nixfarm api-token --scope ${needed}\` on the coordinator prints one)`,
      );
    }
  });
}
