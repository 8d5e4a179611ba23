import type { FastifyReply } from 'fastify';
import { NixfarmError } from '@nixfarm/shared';
import { AmbiguousQueryError } from '../explain/index.js';

/** The API's one error shape: {"error": {"code", "message"}}. */
export function sendError(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  return reply.code(status).send({ error: { code, message } });
}

/** HTTP status for each error code the API can return. */
export function httpStatusFor(error: unknown): number {
  if (!(error instanceof NixfarmError)) return 500;
  switch (error.code) {
    case 'invalid-input':
    case 'invalid-request':
    case 'invalid-store-path':
      return 400;
    case 'run-not-found':
    case 'derivation-not-found':
    case 'attribute-not-found':
      return 404;
    case 'ambiguous-query':
      return 409;
    case 'evaluation-failed':
    case 'unsupported-derivation':
      return 422;
    default:
      return error.retryable ? 503 : 500;
  }
}

/** A NixfarmError a handler threw, in the API's shape; an ambiguous prefix also lists its candidates. */
export function sendNixfarmError(reply: FastifyReply, status: number, error: NixfarmError): FastifyReply {
  if (error instanceof AmbiguousQueryError) return reply.code(status).send({ error: { code: error.code, message: error.message, candidates: error.candidates } });
  return sendError(reply, status, error.code, error.message);
}
