/**
 * Why Nix could not build, as classifyNixBuildFailure and the start-up build
 * probe name it: a failed build's errorCode in its report, a NixSetupError's code.
 */
export const NIX_FAILURE_CODES = [
  // the derivation's own fault: the same on any machine, never retried
  'nix-builder-failed',
  'nix-input-rejected',
  'nix-output-rejected',
  'nix-not-deterministic',
  'nix-cached-failure',
  'nix-output-cycle',
  'nix-output-missing',
  'nix-output-references-refused',
  'nix-output-too-large',
  'nix-sandbox-refused',
  'nix-derivation-invalid',
  // the building machine's Nix setup
  'nix-build-users-missing',
  'nix-build-users-misconfigured',
  'nix-sandbox-unavailable',
  'nix-platform-mismatch',
  'nix-cannot-build',
  // anything else: retried
  'nix-build-not-done',
] as const;
export type NixFailureCode = (typeof NIX_FAILURE_CODES)[number];

/**
 * Every code a NixfarmError carries and the API's error body `{"error": {"code"}}`
 * can hold: a closed list, so a misspelt code fails to compile and every code
 * has an HTTP status (api-errors.ts maps them exhaustively).
 */
export const ERROR_CODES = [
  // the request or input is wrong
  'invalid-input',
  'invalid-request',
  'invalid-store-path',
  'body-too-large',
  'unsupported-media-type',
  'unauthorized',
  'forbidden',
  // what was asked about does not exist, or is not one thing
  'run-not-found',
  'derivation-not-found',
  'attribute-not-found',
  'log-not-found',
  'check-not-found',
  'worker-not-found',
  'not-in-cache',
  'no-such-route',
  'ambiguous-query',
  // the farm is not in a state that allows the request
  'worker-alive',
  // the expression or derivation cannot be built as given
  'evaluation-failed',
  'unsupported-derivation',
  // configuration and key files
  'invalid-api-token-file',
  'invalid-authorized-keys-file',
  'invalid-host-key-file',
  'invalid-signing-key-file',
  'invalid-worker-key-file',
  'invalid-ssh-public-key',
  'invalid-registry-auth-file',
  'invalid-redis-tls-setting',
  // processes, connections and the farm's machines
  'internal-error',
  'nix-command-failed',
  'redis-failed',
  'redis-not-found',
  'redis-refused',
  'redis-no-permission',
  'redis-sentinel-master-unknown',
  'redis-wait-aborted',
  'redis-tls-failed',
  'store-endpoint-failed',
  'serve-connection-failed',
  'coordinator-unreachable',
  'coordinator-store-unavailable',
  'coordinator-missing-input',
  'host-key-mismatch',
  'worker-key-not-authorised',
  'build-not-done',
  // reproducibility checks
  'check-nar-unavailable',
  // uploads to external binary caches
  'invalid-cache-url',
  'cache-unwritable',
  'cache-upload-failed',
  ...NIX_FAILURE_CODES,
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];
