import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { execa } from 'execa';
import { NixCommandError } from '@nixfarm/shared';

export interface WorkerNixOptions {
  /** environment for Nix processes */
  env?: Record<string, string>;
  /** `--option NAME VALUE` pairs for the builds it runs (the worker's sandbox, substituters, extra features), as its serve sessions get them */
  nixOptions?: ReadonlyArray<readonly [string, string]>;
  /** a build whose log grows past this many bytes is stopped (Nix's max-log-size) */
  maxLogBytes?: number;
}

export interface CheckRealiseOptions {
  timeoutSeconds?: number;
  maxSilentSeconds?: number;
  /** every line Nix writes to stderr (the build log and Nix's own messages), without its newline */
  onLogLine: (line: string) => void;
  /** kills the process */
  signal?: AbortSignal;
}

export interface CheckRealiseResult {
  /** Nix's exit code; undefined when the process was killed */
  exitCode: number | undefined;
  /** the signal cancelled the process */
  cancelled: boolean;
}

/**
 * The Nix commands a worker runs as processes of their own; everything
 * else (copies, builds) goes through long-lived serve sessions. The serve
 * protocol has no check mode, so a reproducibility check runs
 * `nix-store --realise --check` here.
 */
export class WorkerNix {
  constructor(private readonly options: WorkerNixOptions) {}

  async version(): Promise<string> {
    const result = await execa('nix-store', ['--version'], { env: this.options.env, stdin: 'ignore' });
    return String(result.stdout).trim();
  }

  /**
   * Builds `drvPath` again and compares each output with the valid one
   * (`--check`); a differing output is left at `<output>.check` and its build
   * directory is kept (`--keep-failed`) for the caller to remove. Never
   * throws for Nix's exit code: the caller reads it.
   */
  async realiseCheck(drvPath: string, options: CheckRealiseOptions): Promise<CheckRealiseResult> {
    const args = [
      '--realise',
      drvPath,
      '--check',
      '--keep-failed',
      ...(this.options.nixOptions ?? []).flatMap(([name, value]) => ['--option', name, value]),
      ...(this.options.maxLogBytes === undefined ? [] : ['--option', 'max-log-size', String(this.options.maxLogBytes)]),
      ...(options.timeoutSeconds === undefined ? [] : ['--timeout', String(options.timeoutSeconds)]),
      ...(options.maxSilentSeconds === undefined ? [] : ['--max-silent-time', String(options.maxSilentSeconds)]),
    ];
    const child = execa('nix-store', args, {
      env: this.options.env,
      stdin: 'ignore',
      stdout: 'ignore',
      buffer: false,
      reject: false,
      ...(options.signal === undefined ? {} : { cancelSignal: options.signal }),
    });
    const lines = createInterface({ input: child.stderr, crlfDelay: Number.POSITIVE_INFINITY });
    lines.on('line', options.onLogLine);
    const result = await child;
    lines.close();
    return { exitCode: result.exitCode, cancelled: result.isCanceled === true };
  }

  /**
   * Streams the NAR serialisation of `path` (`nix-store --dump`: any path,
   * also a `.check` tree that is not a valid store path) into `consume`;
   * returns what it returns once Nix exited cleanly.
   */
  async dump<T>(path: string, consume: (nar: Readable) => Promise<T>): Promise<T> {
    const args = ['--dump', path];
    const child = execa('nix-store', args, { env: this.options.env, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe', buffer: { stdout: false, stderr: true } });
    // Collected whatever happens, so a failed dump never leaves the process or an unhandled rejection behind.
    const exited = child.then(
      (r) => ({ ok: true as const, r }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    let value: T;
    try {
      value = await consume(child.stdout);
    } catch (error) {
      child.kill();
      await exited;
      throw error;
    }
    const ended = await exited;
    if (!ended.ok) {
      const e = ended.error as { exitCode?: number; stderr?: unknown };
      throw new NixCommandError(['nix-store', ...args], e.exitCode, typeof e.stderr === 'string' ? e.stderr : String(ended.error), { retryable: true });
    }
    return value;
  }
}
