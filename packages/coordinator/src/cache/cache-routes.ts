import type { FastifyInstance } from 'fastify';
import { NIX_BASE32_CHAR } from '@nixfarm/shared';
import { sendError } from '../http/api-errors.js';
import type { BinaryCache } from './binary-cache.js';

/** Where the binary cache lives on the HTTP port: apart from /api, the dashboard and /queues. The substituter URL is http://HOST:PORT/cache. */
export const CACHE_PREFIX = '/cache';

const NARINFO_FILE = new RegExp(`^(${NIX_BASE32_CHAR}{32})\\.narinfo$`);
const NAR_FILE = new RegExp(`^(${NIX_BASE32_CHAR}{32})\\.nar\\.zst$`);

/**
 * The binary cache protocol Nix's http substituter speaks: nix-cache-info,
 * <hash>.narinfo and the NARs the narinfo points to. Anything that is not a
 * hash part of 32 base-32 characters is a 404 before any lookup.
 */
export function registerCacheRoutes(app: FastifyInstance, cache: BinaryCache): void {
  app.get(`${CACHE_PREFIX}/nix-cache-info`, async (_request, reply) => reply.type('text/x-nix-cache-info').send(cache.cacheInfo()));

  app.get<{ Params: { file: string } }>(`${CACHE_PREFIX}/:file`, async (request, reply) => {
    const hash = NARINFO_FILE.exec(request.params.file)?.[1];
    const narinfo = hash === undefined ? undefined : await cache.narinfo(hash);
    if (narinfo === undefined) return notCached(reply, request.params.file);
    return reply.type('text/x-nix-narinfo').send(narinfo);
  });

  app.get<{ Params: { file: string } }>(`${CACHE_PREFIX}/nar/:file`, async (request, reply) => {
    const hash = NAR_FILE.exec(request.params.file)?.[1];
    const nar = hash === undefined ? undefined : await cache.nar(hash);
    if (nar === undefined) return notCached(reply, `nar/${request.params.file}`);
    return reply.type('application/x-nix-nar').send(nar);
  });
}

function notCached(reply: Parameters<typeof sendError>[0], file: string) {
  return sendError(
    reply,
    404,
    'not-in-cache',
    `${CACHE_PREFIX}/${file}: the cache serves <hash>.narinfo and its NAR only for outputs the farm built and signed, while they are in the coordinator's store`,
  );
}
