import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import {
  NixfarmError,
  assertDerivationPath,
  buildLogInfoSchema,
  hashPart,
  formatZodError,
  isBuildStatus,
  isTerminal,
  runIdSchema,
  type Logger,
} from '@nixfarm/shared';
import { AmbiguousQueryError, DerivationLocator, DerivationNotFoundError, parseWhyQuery } from '../explain/index.js';
import { NodeReader } from '../graph/node-reader.js';
import type { RunService } from '../runs/run-service.js';
import type { BuildLogService } from '../logs/build-log-service.js';
import { EVENT_STREAM_HEADERS, type EventStreams } from '../http/event-streams.js';
import { sendError } from '../http/api-errors.js';
import { ambiguousResponse, errorResponse, textSchema } from '../http/openapi-components.js';

export interface LogRoutesDeps {
  redis: Redis;
  runs: Pick<RunService, 'get'>;
  logs: BuildLogService;
  logger: Logger;
  streams: EventStreams;
}

/** A run whose results have no attribute by that name, or several derivations where one was meant. */
class RunAttributeError extends NixfarmError {
  constructor(message: string) {
    super('attribute-not-found', message);
  }
}

const logQuerySchema = z
  .object({
    path: z.string().min(1).max(1000).optional().describe('a .drv path, an output path or a hash prefix'),
    run: runIdSchema.optional().describe("a run id: the log of that run's derivation"),
    attr: z.string().max(1024).optional().describe('with run: the attribute whose derivation is meant'),
    follow: z.enum(['0', '1']).optional().describe('1: keep the response open and stream the log as the build writes it'),
    info: z.enum(['0', '1']).optional().describe('1: answer JSON about the log (source, live, complete, attempts, stored file) instead of its text'),
  })
  .strict()
  .refine((q) => (q.path === undefined) !== (q.run === undefined), {
    message: 'give exactly one of path (a .drv path, an output path or a hash prefix) or run (a run id, with attr)',
  });

const flag = (description: string): z.ZodType => z.enum(['true', 'false']).describe(description);

const LOG_SCHEMA = {
  operationId: 'buildLog',
  summary: "A derivation's build log: live while it builds, else the stored file",
  description:
    "Give exactly one of path or run (with attr when the run built several derivations). With follow=1 the text streams until the build ends; ask for text/event-stream to get it as server-sent events (a browser's EventSource).",
  tags: ['derivations'],
  querystring: logQuerySchema,
  response: {
    '200': {
      description: 'the log text, empty when the build printed nothing (info=1: JSON about it)',
      headers: {
        'x-nixfarm-drv-path': z.string().describe('the derivation the query resolved to'),
        'x-nixfarm-log-complete': flag('false when a worker stopped reporting mid-build (not sent with follow=1)'),
        'x-nixfarm-log-live': flag('true while the build runs: an empty log then means nothing printed yet (not sent with follow=1)'),
      },
      content: {
        'text/plain': { schema: textSchema() },
        'application/json': { schema: buildLogInfoSchema },
        'text/event-stream': {
          schema: textSchema(
            'with follow=1 and Accept: text/event-stream: `event: log` whose data is a JSON string of log text, then `event: end` with {"status"} when the build ends',
          ),
        },
      },
    },
    '400': errorResponse('not a valid log query (invalid-request)'),
    '404': errorResponse(
      'no such derivation, or the run has no result for that attribute; log-not-found: the derivation is known but has no log (not built yet, or never built here)',
    ),
    '409': ambiguousResponse,
  },
};

/** Why a known derivation has no log to show. */
function noLogMessage(drvPath: string, status: string): string {
  if (isBuildStatus(status) && !isTerminal(status)) return `no build log of ${drvPath} yet: it is ${status} (\`nixfarm log -f\` waits for its build)`;
  return `no build log of ${drvPath} is stored (status ${status})`;
}

/**
 * Build logs: GET /api/logs?path=<drv|output|hash prefix> or ?run=<id>&attr=<name>
 * answers the log as text/plain (live while the build runs, else the stored
 * file), with follow=1 streams it until the build ends, with info=1 answers
 * JSON about it (status, live, complete, attempts, the stored file).
 */
export function registerLogRoutes(app: FastifyInstance, deps: LogRoutesDeps): void {
  const locator = new DerivationLocator(deps.redis);
  const nodes = new NodeReader(deps.redis);

  /** The .drv path a query means; throws the API's not-found and ambiguity errors. */
  const resolve = async (query: z.infer<typeof logQuerySchema>): Promise<string> => {
    if (query.run !== undefined) {
      const run = await deps.runs.get(query.run);
      const matching = run.results.filter((r) => query.attr === undefined || r.attr === query.attr);
      const drvPaths = [...new Set(matching.map((r) => r.drvPath))];
      const attrs = [...new Set(run.results.map((r) => r.attr || '(no attribute)'))].join(', ');
      if (drvPaths.length === 0)
        throw new RunAttributeError(`run ${run.id} has no result for attribute ${JSON.stringify(query.attr)}; its attributes: ${attrs || '(none)'}`);
      if (drvPaths.length > 1) throw new RunAttributeError(`run ${run.id} built ${drvPaths.length} derivations; name one of its attributes: ${attrs}`);
      return assertDerivationPath(drvPaths[0]!);
    }
    const raw = query.path!;
    const resolution = await locator.resolve(parseWhyQuery(raw));
    if (resolution.kind === 'not-found') throw new DerivationNotFoundError(raw.trim());
    if (resolution.kind === 'ambiguous') throw new AmbiguousQueryError(raw.trim(), resolution.candidates, resolution.total);
    const drvPath = (await nodes.read(resolution.hash, []))?.path;
    if (drvPath === undefined) throw new DerivationNotFoundError(raw.trim());
    return assertDerivationPath(drvPath);
  };

  app.get('/api/logs', { schema: LOG_SCHEMA }, async (request, reply) => {
    const parsed = logQuerySchema.safeParse(request.query);
    if (!parsed.success) return sendError(reply, 400, 'invalid-request', formatZodError(parsed.error, 'log query'));
    // Unknown derivations, runs and attributes (404) and ambiguous prefixes (409) are the error handler's.
    const drvPath = await resolve(parsed.data);
    if (parsed.data.follow !== '1') {
      const found = await deps.logs.read(drvPath);
      if (found === undefined) return sendError(reply, 404, 'derivation-not-found', `no derivation known for ${drvPath}`);
      if (parsed.data.info === '1') return found.info;
      // An empty body is a build that printed nothing (or nothing yet, live); no log at all is a 404, as nix-store --read-log refuses it.
      if (found.info.source === 'none' && !found.info.live) return sendError(reply, 404, 'log-not-found', noLogMessage(drvPath, found.info.status));
      return reply
        .header('content-type', 'text/plain; charset=utf-8')
        .header('x-nixfarm-drv-path', drvPath)
        .header('x-nixfarm-log-complete', String(found.info.complete))
        .header('x-nixfarm-log-live', String(found.info.live))
        .send(found.text);
    }
    // Asked for as server-sent events (a browser's EventSource): each piece of text is a `log` event, and `end` says the build ended.
    const asEvents = /\btext\/event-stream\b/.test(request.headers.accept ?? '');
    const { raw, closed } = deps.streams.start(request, reply, {
      ...(asEvents ? EVENT_STREAM_HEADERS : { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-cache' }),
      'x-nixfarm-drv-path': drvPath,
    });
    const write = asEvents ? (text: string): boolean => raw.write(`event: log\ndata: ${JSON.stringify(text)}\n\n`) : (text: string): boolean => raw.write(text);
    try {
      await deps.logs.follow(drvPath, write, closed);
      if (asEvents && !closed.aborted) {
        const status = (await nodes.read(hashPart(drvPath), ['status']))?.status;
        raw.write(`event: end\ndata: ${JSON.stringify({ status: status ?? 'unknown' })}\n\n`);
      }
    } catch (error) {
      deps.logger.warn({ err: error, drvPath }, 'following a build log ended');
    } finally {
      raw.end();
    }
  });
}
