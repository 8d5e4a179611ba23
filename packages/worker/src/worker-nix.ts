import { execa, type ResultPromise } from 'execa';
import { InfrastructureError, NixCommandError, assertDerivationPath, assertStorePath, type Logger } from '@nixfarm/shared';

/**
 * Every Nix call a worker makes goes through here: argument arrays only,
 * commands and flags that exist from Nix 2.8 on (nix-store, nix-copy-closure),
 * nothing that assumes Linux.
 */
export interface WorkerNixOptions {
  logger: Logger;
  /** `--option NAME VALUE` for every build (sandbox, extra-platforms, substituters, ...) */
  nixOptions: ReadonlyArray<readonly [string, string]>;
  /** environment for Nix processes */
  env?: Record<string, string>;
}

export interface RealiseOptions {
  timeoutSeconds?: number;
  maxSilentSeconds?: number;
  /** called for every line of the build's stderr */
  onLogLine?: (line: string) => void;
  signal?: AbortSignal;
}

export interface RealiseResult {
  exitCode: number;
  /** the store paths nix-store printed (the derivation's outputs) */
  outputPaths: string[];
}

/** Nix's exit status for a failed build is 100 plus flags: 1 timed out, 2 hash mismatch, 4 not deterministic. */
export const NIX_BUILD_FAILED = 100;
export const NIX_TIMED_OUT_FLAG = 1;

const PATHS_PER_CALL = 2000;

export class WorkerNix {
  constructor(private readonly options: WorkerNixOptions) {}

  private optionArgs(): string[] {
    return this.options.nixOptions.flatMap(([name, value]) => ['--option', name, value]);
  }

  async version(): Promise<string> {
    const result = await execa('nix-store', ['--version'], { env: this.options.env, stdin: 'ignore' });
    return String(result.stdout).trim();
  }

  async invalidPaths(paths: readonly string[]): Promise<Set<string>> {
    const invalid = new Set<string>();
    for (let i = 0; i < paths.length; i += PATHS_PER_CALL) {
      const chunk = paths.slice(i, i + PATHS_PER_CALL).map(assertStorePath);
      const result = await execa('nix-store', ['--check-validity', '--print-invalid', ...chunk], { reject: false, env: this.options.env, stdin: 'ignore' });
      if (result.exitCode !== 0) throw new NixCommandError(['nix-store', '--check-validity'], result.exitCode, String(result.stderr), { retryable: true });
      for (const line of String(result.stdout).split('\n')) if (line.length > 0) invalid.add(line);
    }
    return invalid;
  }

  /** nix-copy-closure --from/--to over the coordinator's SSH endpoint; a failure is an infrastructure fault (retried). */
  async copyClosure(direction: 'from' | 'to', host: string, paths: readonly string[], sshOpts: string): Promise<void> {
    if (paths.length === 0) return;
    for (const p of paths) assertStorePath(p);
    const args = [`--${direction}`, host, ...paths];
    const result = await execa('nix-copy-closure', args, {
      reject: false,
      stdin: 'ignore',
      env: { ...this.options.env, NIX_SSHOPTS: sshOpts },
    });
    if (result.exitCode !== 0) {
      throw new InfrastructureError('copy-failed', `nix-copy-closure --${direction} ${host} (${paths.length} paths) failed with exit code ${result.exitCode}: ${String(result.stderr).trim().split('\n').slice(-5).join(' / ')}`);
    }
  }

  /** Realises exactly one derivation whose inputs are already valid; the build log arrives line by line. */
  async realise(drvPath: string, options: RealiseOptions = {}): Promise<RealiseResult> {
    assertDerivationPath(drvPath);
    const args = ['--realise', drvPath, ...this.optionArgs()];
    if (options.timeoutSeconds !== undefined) args.push('--option', 'timeout', String(options.timeoutSeconds));
    if (options.maxSilentSeconds !== undefined) args.push('--option', 'max-silent-time', String(options.maxSilentSeconds));
    const child: ResultPromise = execa('nix-store', args, {
      reject: false,
      stdin: 'ignore',
      env: this.options.env,
      cancelSignal: options.signal,
      forceKillAfterDelay: 2000,
      buffer: { stdout: true, stderr: false },
    });
    // stderr is not buffered, so it is always drained here, whether or not someone listens.
    {
      const onLine = options.onLogLine ?? (() => undefined);
      let partial = '';
      child.stderr?.on('data', (chunk: Buffer) => {
        const text = partial + chunk.toString('utf8');
        const lines = text.split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) onLine(line);
      });
      child.stderr?.on('end', () => {
        if (partial.length > 0) onLine(partial);
      });
    }
    const result = await child;
    const outputPaths = String(result.stdout ?? '')
      .split('\n')
      .filter((l) => l.length > 0);
    return { exitCode: result.exitCode ?? -1, outputPaths };
  }
}
