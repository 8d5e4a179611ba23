import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { execa } from 'execa';
import { NixSetupError, NixfarmError } from './errors.js';
import { classifyNixBuildFailure } from './nix-build-failure.js';
import { NIX_BASE32_ALPHABET } from './nix-base32.js';
import type { NixFailureCode } from './error-codes.js';
import { STORE_DIR } from './store-path.js';
import type { Logger } from './logger.js';
import type { ServePool } from './serve/serve-pool.js';
import { buildSucceeded, type BasicDerivation } from './serve/serve-protocol.js';

export interface NixBuildProbeOptions {
  /** the pool later builds use: the probe builds with their command, options and environment */
  store: ServePool;
  /** which Nix, in messages: "the coordinator's Nix", "worker w1's Nix" */
  nix: string;
  /** environment overrides of that Nix's processes, as the pool's sessions get them (for deleting the probe's output) */
  env?: Record<string, string>;
  /** `--option NAME VALUE` pairs of that Nix (for deleting the probe's output) */
  nixOptions?: ReadonlyArray<readonly [string, string]>;
  /** another way out, added to every fix (the coordinator: start with --no-local-builds) */
  alternative?: string;
  logger: Logger;
  /** a probe that has not ended by then fails; default 60 s (a build waits while every build user is busy) */
  timeoutMs?: number;
}

export interface NixBuildProbeResult {
  ms: number;
  /** the output path it built (and deleted) */
  path: string;
}

const PROBE_NAME = 'nixfarm-build-probe';
/** what the context of every probe error says */
const CONTEXT = 'checked at start with a trivial build';

/** A store path no store has yet: 32 random characters of Nix's base-32, so Nix really builds each time. */
function freshStorePath(suffix: string): string {
  const hash = Array.from(randomBytes(32), (b) => NIX_BASE32_ALPHABET[b % 32]).join('');
  return `${STORE_DIR}/${hash}-${PROBE_NAME}${suffix}`;
}

/**
 * The probe derivation: Nix's built-in buildenv with no packages writes an
 * output dir holding one symlink (manifest.nix -> /dev/null). It needs no
 * shell, no input and no .drv in the store, yet Nix acquires a build user
 * and sets up the sandbox for it as for any build, so it fails exactly as a
 * real build would on a machine whose Nix cannot build.
 */
function probeDerivation(out: string): BasicDerivation {
  return {
    outputs: { out: { path: out, hashAlgo: '', hash: '' } },
    inputSrcs: [],
    platform: 'builtin',
    builder: 'builtin:buildenv',
    args: [],
    env: { builder: 'builtin:buildenv', derivations: '', manifest: '/dev/null', name: PROBE_NAME, out, system: 'builtin' },
  };
}

const GENERIC_FIX =
  'Nix could not build a trivial derivation with the settings this process gives it (nix.conf, NIX_CONFIG, --nix-option): fix what Nix says ' +
  '(`nix-store --realise` of any derivation on this machine shows the same error)';

/**
 * Checks that a Nix can really build, the way later builds will (same
 * serve-session command, options, environment, sandbox): one build of a
 * trivial derivation under a fresh output path, deleted again afterwards.
 * Takes tens of milliseconds. Throws NixSetupError naming the Nix, quoting
 * Nix and saying what to change.
 */
export async function probeNixBuild(options: NixBuildProbeOptions): Promise<NixBuildProbeResult> {
  const started = Date.now();
  // One more try for a failure that looks passing (a lock, a hiccup): a refused start must mean a setup that cannot build.
  let lastError: NixSetupError | undefined;
  for (let attempt = 1; attempt <= 2; attempt++) {
    const outcome = await probeOnce(options);
    if (outcome.error === undefined) {
      const ms = Date.now() - started;
      options.logger.debug({ nix: options.nix, ms, attempt, path: outcome.path }, 'Nix build probe passed');
      return { ms, path: outcome.path };
    }
    lastError = outcome.error;
    if (!outcome.worthRetry) break;
    options.logger.debug({ nix: options.nix, err: outcome.error }, 'Nix build probe failed; trying once more');
  }
  throw lastError!;
}

/** One try: no error when Nix built it; `path` names the probe's output path either way. */
async function probeOnce(options: NixBuildProbeOptions): Promise<{ path: string; error?: NixSetupError; worthRetry?: boolean }> {
  const out = freshStorePath('');
  const drvPath = freshStorePath('.drv');
  const timeoutMs = options.timeoutMs ?? 60_000;
  const stderr: string[] = [];
  let timedOut = false;
  let result;
  try {
    result = await options.store.once(async (session) => {
      session.onStderrLine = (line) => {
        stderr.push(line);
        if (stderr.length > 10) stderr.shift();
      };
      const timer = setTimeout(() => {
        timedOut = true;
        void session.close();
      }, timeoutMs);
      try {
        return await session.connection.buildDerivation(drvPath, probeDerivation(out), {
          maxSilentSeconds: 0,
          timeoutSeconds: Math.ceil(timeoutMs / 1000),
          maxLogSize: 0,
        });
      } finally {
        clearTimeout(timer);
      }
    });
  } catch (error) {
    await removeLockFile(out);
    const nixMessage = timedOut
      ? `a trivial build did not end within ${timeoutMs / 1000} s (are all of Nix's build users busy, or is its store locked?)`
      : error instanceof Error
        ? error.message
        : String(error);
    return {
      path: out,
      error: setupError(options, out, 'nix-cannot-build', nixMessage, GENERIC_FIX, error),
      worthRetry: !timedOut && !(error instanceof NixfarmError && !error.retryable),
    };
  }
  if (buildSucceeded(result.status)) {
    await deleteProbeOutput(options, out);
    return { path: out };
  }
  await removeLockFile(out);
  const failure = classifyNixBuildFailure(result.status, result.errorMessage);
  if (failure.kind === 'machine')
    return { path: out, error: setupError(options, out, failure.code, failure.message, failure.fix ?? GENERIC_FIX), worthRetry: false };
  const said = stderr.filter((l) => l.trim() !== '').join('\n');
  return {
    path: out,
    error: setupError(options, out, 'nix-cannot-build', said === '' ? failure.message : `${failure.message}\n${said}`, GENERIC_FIX),
    worthRetry: failure.kind === 'transient',
  };
}

function setupError(options: NixBuildProbeOptions, path: string, code: NixFailureCode, nixMessage: string, fix: string, cause?: unknown): NixSetupError {
  const fullFix = options.alternative === undefined ? fix : `${fix}\n${options.alternative}`;
  return new NixSetupError({
    nix: options.nix,
    code,
    nixMessage,
    fix: fullFix,
    context: CONTEXT,
    details: { probePath: path },
    ...(cause === undefined ? {} : { cause }),
  });
}

/** A build refused before it ran leaves Nix's lock file of the output path (a GC would take it); the session that held it is closed by now. */
async function removeLockFile(out: string): Promise<void> {
  await rm(`${out}.lock`, { force: true }).catch(() => undefined);
}

/** The probe leaves nothing behind; a path it cannot delete is harmless (the next GC takes it), so that only warns. */
async function deleteProbeOutput(options: NixBuildProbeOptions, out: string): Promise<void> {
  const args = ['--delete', out, ...(options.nixOptions ?? []).flatMap(([name, value]) => ['--option', name, value])];
  const deleted = await execa('nix-store', args, {
    reject: false,
    stdin: 'ignore',
    env: options.env === undefined ? undefined : { ...process.env, ...options.env },
    timeout: 30_000,
  });
  if (deleted.exitCode !== 0)
    options.logger.warn(
      { path: out, stderr: String(deleted.stderr).split('\n').slice(-3).join('\n') },
      "could not delete the Nix build probe's output; the next garbage collection will",
    );
}
