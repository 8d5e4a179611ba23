import type { FastifyReply } from 'fastify';
import { NixfarmError, type ErrorCode } from '@nixfarm/shared';
import { AmbiguousQueryError } from '../explain/index.js';

/** The API's one error shape: {"error": {"code", "message"}}. */
export function sendError(reply: FastifyReply, status: number, code: ErrorCode, message: string): FastifyReply {
  return reply.code(status).send({ error: { code, message } });
}

/** The server's own fault: 503 when trying again may help (the error is retryable), else 500. */
const SERVER_FAULT = 'server-fault';

/** HTTP status for every error code: a Record, so a new code cannot go without one. */
const HTTP_STATUS: Readonly<Record<ErrorCode, number | typeof SERVER_FAULT>> = {
  'invalid-input': 400,
  'invalid-request': 400,
  'invalid-store-path': 400,
  'body-too-large': 413,
  'unsupported-media-type': 415,
  unauthorized: 401,
  forbidden: 403,
  'run-not-found': 404,
  'derivation-not-found': 404,
  'attribute-not-found': 404,
  'log-not-found': 404,
  'check-not-found': 404,
  'worker-not-found': 404,
  'not-in-cache': 404,
  'no-such-route': 404,
  'ambiguous-query': 409,
  'worker-alive': 409,
  'evaluation-failed': 422,
  'unsupported-derivation': 422,
  'invalid-api-token-file': SERVER_FAULT,
  'invalid-registry-auth-file': 400,
  'invalid-redis-tls-setting': SERVER_FAULT,
  'invalid-authorized-keys-file': SERVER_FAULT,
  'invalid-host-key-file': SERVER_FAULT,
  'invalid-signing-key-file': SERVER_FAULT,
  'invalid-worker-key-file': SERVER_FAULT,
  'invalid-ssh-public-key': SERVER_FAULT,
  'internal-error': SERVER_FAULT,
  'nix-command-failed': SERVER_FAULT,
  'redis-failed': SERVER_FAULT,
  'redis-not-found': SERVER_FAULT,
  'redis-refused': SERVER_FAULT,
  'redis-no-permission': SERVER_FAULT,
  'redis-sentinel-master-unknown': SERVER_FAULT,
  'redis-wait-aborted': SERVER_FAULT,
  'redis-tls-failed': SERVER_FAULT,
  'store-endpoint-failed': SERVER_FAULT,
  'serve-connection-failed': SERVER_FAULT,
  'coordinator-unreachable': SERVER_FAULT,
  'coordinator-store-unavailable': SERVER_FAULT,
  'coordinator-missing-input': SERVER_FAULT,
  'host-key-mismatch': SERVER_FAULT,
  'worker-key-not-authorised': SERVER_FAULT,
  'build-not-done': SERVER_FAULT,
  'check-nar-unavailable': 410,
  'invalid-cache-url': 400,
  'cache-unwritable': 422,
  'cache-upload-failed': SERVER_FAULT,
  'nix-builder-failed': SERVER_FAULT,
  'nix-input-rejected': SERVER_FAULT,
  'nix-output-rejected': SERVER_FAULT,
  'nix-not-deterministic': SERVER_FAULT,
  'nix-cached-failure': SERVER_FAULT,
  'nix-output-cycle': SERVER_FAULT,
  'nix-output-missing': SERVER_FAULT,
  'nix-output-references-refused': SERVER_FAULT,
  'nix-output-too-large': SERVER_FAULT,
  'nix-sandbox-refused': SERVER_FAULT,
  'nix-derivation-invalid': SERVER_FAULT,
  'nix-build-users-missing': SERVER_FAULT,
  'nix-build-users-misconfigured': SERVER_FAULT,
  'nix-sandbox-unavailable': SERVER_FAULT,
  'nix-platform-mismatch': SERVER_FAULT,
  'nix-cannot-build': SERVER_FAULT,
  'nix-build-not-done': SERVER_FAULT,
};

/** HTTP status for an error a handler threw; anything but a NixfarmError is a 500. */
export function httpStatusFor(error: unknown): number {
  if (!(error instanceof NixfarmError)) return 500;
  const status = HTTP_STATUS[error.code];
  if (status !== SERVER_FAULT) return status;
  return error.retryable ? 503 : 500;
}

/** A NixfarmError a handler threw, in the API's shape; an ambiguous prefix also lists its candidates. */
export function sendNixfarmError(reply: FastifyReply, status: number, error: NixfarmError): FastifyReply {
  if (error instanceof AmbiguousQueryError)
    return reply.code(status).send({ error: { code: error.code, message: error.message, candidates: error.candidates } });
  return sendError(reply, status, error.code, error.message);
}
