import type { ErrorCode, NixFailureCode } from './error-codes.js';
import { stripTerminalEscapes } from './terminal-escapes.js';

/**
 * Errors that carry meaning as data: `code` names the failure for machines,
 * `retryable` says whether trying again may help (an infrastructure fault)
 * or cannot (bad input, a builder that failed). Nothing matches on messages.
 */
export class NixfarmError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: { retryable?: boolean; cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.details = options.details;
  }
}

/** Input that can never become valid by retrying: a bad path, body, payload or config. */
export class ValidationError extends NixfarmError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('invalid-input', message, { retryable: false, details });
  }
}

export class InvalidStorePathError extends NixfarmError {
  readonly path: string;
  constructor(path: string, reason: string) {
    super('invalid-store-path', `not a valid Nix store path: ${JSON.stringify(path)} (${reason})`, { retryable: false });
    this.path = path;
  }
}

/** Nix itself reported an error (evaluation, a failed command). */
export class NixCommandError extends NixfarmError {
  readonly command: readonly string[];
  readonly exitCode: number | undefined;
  /** as Nix wrote it */
  readonly stderr: string;
  constructor(command: readonly string[], exitCode: number | undefined, stderr: string, options: { retryable?: boolean; code?: ErrorCode } = {}) {
    // The message is shown by the API and stored with a run: no terminal reads it, so no colours.
    const summary = stripTerminalEscapes(stderr).trim().split('\n').slice(-20).join('\n');
    super(options.code ?? 'nix-command-failed', `${command.join(' ')} failed${exitCode === undefined ? '' : ` with exit code ${exitCode}`}:\n${summary}`, {
      retryable: options.retryable ?? false,
    });
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** An infrastructure fault (SSH, copy, lost connection): the build is retried elsewhere or later. */
export class InfrastructureError extends NixfarmError {
  constructor(code: ErrorCode, message: string, cause?: unknown) {
    super(code, message, { retryable: true, cause });
  }
}

export interface NixSetupErrorOptions {
  /** which Nix: "the coordinator's Nix", "worker w1's Nix" */
  nix: string;
  /** the fault, for machines: nix-build-users-missing, nix-sandbox-unavailable, nix-platform-mismatch, nix-cannot-build, ... */
  code: NixFailureCode;
  /** Nix's own error, as it printed it (without colours) */
  nixMessage: string;
  /** what to change so that this Nix builds; one line per way out (lines after the first start with "or", or are commands indented by two spaces) */
  fix: string;
  /** when it was seen, e.g. "checked at start with a trivial build" */
  context?: string;
  cause?: unknown;
  details?: Record<string, unknown>;
}

/**
 * A machine's Nix cannot build at all (its setup, not any derivation): no
 * build is worth trying there until the setup is fixed, and none should be
 * counted against a derivation. The message names the Nix, quotes Nix and
 * says what to change.
 */
export class NixSetupError extends NixfarmError {
  declare readonly code: NixFailureCode;
  readonly nix: string;
  readonly nixMessage: string;
  readonly fix: string;

  constructor(options: NixSetupErrorOptions) {
    const context = options.context === undefined ? '' : ` (${options.context})`;
    const fix = options.fix.split('\n').join('\n       ');
    super(options.code, `${options.nix} cannot build${context}: ${options.nixMessage}\n  fix: ${fix}`, {
      retryable: false,
      cause: options.cause,
      details: options.details,
    });
    this.nix = options.nix;
    this.nixMessage = options.nixMessage;
    this.fix = options.fix;
  }

  /** One line (the heartbeat's pause reason, a hand-back's reason), cut to `max` characters. */
  oneLine(max = 1000): string {
    const fix = this.fix
      .split('\n')
      .map((l) => l.trim())
      .join(' ');
    const line = `${this.nix} cannot build: ${this.nixMessage.split('\n')[0]} (fix: ${fix})`;
    return line.length <= max ? line : `${line.slice(0, max - 1)}…`;
  }
}
