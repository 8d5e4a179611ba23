import { stripTerminalEscapes } from './terminal-escapes.js';

/**
 * Errors that carry meaning as data: `code` names the failure for machines,
 * `retryable` says whether trying again may help (an infrastructure fault)
 * or cannot (bad input, a builder that failed). Nothing matches on messages.
 */
export class NixfarmError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, options: { retryable?: boolean; cause?: unknown; details?: Record<string, unknown> } = {}) {
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
  constructor(command: readonly string[], exitCode: number | undefined, stderr: string, options: { retryable?: boolean; code?: string } = {}) {
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
  constructor(code: string, message: string, cause?: unknown) {
    super(code, message, { retryable: true, cause });
  }
}
