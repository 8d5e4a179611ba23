import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { NixfarmError, checkViewSchema, checksOverviewSchema, type CheckView } from '@nixfarm/shared';
import { AmbiguousQueryError, parseWhyQuery } from '../explain/index.js';
import { ambiguousResponse, errorResponse, jsonResponse, textSchema } from '../http/openapi-components.js';
import type { CheckService } from './check-service.js';
import type { MismatchInspector } from './mismatch-inspector.js';

export interface CheckRoutesDeps {
  service: Pick<CheckService, 'overview' | 'find'>;
  /** the reports of mismatches (absent: none are kept) */
  reports?: Pick<MismatchInspector, 'report'>;
}

class CheckNotFoundError extends NixfarmError {
  constructor(message: string) {
    super('check-not-found', message);
  }
}

const paramsSchema = z.object({ drv: z.string().min(1).max(1000).describe('a .drv path or an output path (URL-encoded), or a prefix of the .drv hash part') });
type DrvParams = { Params: { drv: string } };
const NOT_FOUND = errorResponse('no check of that derivation (check-not-found)');
const limitSchema = z.object({
  limit: z.coerce.number().int().min(1).max(500).optional().describe('how many of the newest checks and mismatches (default 20)'),
});

/** Reproducibility checks: the farm's counts and newest ones, one derivation's latest check, and the report of its difference. */
export function registerCheckRoutes(app: FastifyInstance, deps: CheckRoutesDeps): void {
  app.get<{ Querystring: { limit?: number } }>(
    '/api/checks',
    {
      schema: {
        operationId: 'listChecks',
        summary: 'Reproducibility checks: counts by state, the check fraction, the newest checks and the newest mismatches',
        tags: ['checks'],
        querystring: limitSchema,
        response: { '200': jsonResponse('the overview', checksOverviewSchema) },
      },
    },
    async (request) => deps.service.overview(request.query.limit ?? 20),
  );

  app.get<DrvParams>(
    '/api/checks/:drv',
    {
      schema: {
        operationId: 'getCheck',
        summary: "A derivation's latest reproducibility check: state, builder and checker, each output's NAR hashes, the error, the diff's summary",
        tags: ['checks'],
        params: paramsSchema,
        response: {
          '200': jsonResponse('the check', checkViewSchema),
          '400': errorResponse('not a store path or hash prefix'),
          '404': NOT_FOUND,
          '409': ambiguousResponse,
        },
      },
    },
    async (request) => find(deps, request.params.drv),
  );

  app.get<DrvParams>(
    '/api/checks/:drv/diff',
    {
      schema: {
        operationId: 'getCheckDiff',
        summary: "How a rebuild differed from the coordinator's copy: plain text (diffoscope's, or a file listing with text diffs), and the diff hook's output",
        tags: ['checks'],
        params: paramsSchema,
        produces: ['text/plain'],
        response: {
          '200': { description: 'the report', content: { 'text/plain': { schema: textSchema('the report') } } },
          '400': errorResponse('not a store path or hash prefix'),
          '404': errorResponse('no check of that derivation, or it found no difference (check-not-found)'),
          '409': ambiguousResponse,
        },
      },
    },
    async (request, reply) => {
      const check = await find(deps, request.params.drv);
      const hash = check.drvPath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      const report = check.state === 'not-reproducible' ? await deps.reports?.report(hash) : undefined;
      if (report === undefined) throw new CheckNotFoundError(noReport(check));
      return reply.header('content-type', 'text/plain; charset=utf-8').header('x-nixfarm-drv-path', check.drvPath).send(report);
    },
  );
}

async function find(deps: CheckRoutesDeps, raw: string): Promise<CheckView> {
  const found = await deps.service.find(parseWhyQuery(raw));
  if (found.kind === 'ambiguous') throw new AmbiguousQueryError(raw.trim(), found.candidates, found.total);
  if (found.kind === 'not-found')
    throw new CheckNotFoundError(
      `no reproducibility check of ${raw.trim()}: check it with \`nixfarm build --check\`, or sample builds with the coordinator's --check-fraction`,
    );
  return found.check;
}

function noReport(check: CheckView): string {
  switch (check.state) {
    case 'not-reproducible':
      return `the check of ${check.drvPath} found a difference, but no report of it is kept (${check.error ?? 'the rebuilt copy was not brought back'})`;
    case 'reproducible':
      return `the check of ${check.drvPath} found no difference: the rebuild on ${check.checker ?? 'another worker'} had the same NAR hashes`;
    case 'waiting':
    case 'queued':
    case 'running':
      return `the check of ${check.drvPath} has not ended (${check.state}): wait for it with \`nixfarm wait\` or look again`;
    case 'failed':
    case 'skipped':
    case 'cancelled':
      return `the check of ${check.drvPath} ended ${check.state}${check.error === undefined ? '' : `: ${check.error}`}`;
  }
}
