import { execa } from 'execa';
import { stripTerminalEscapes, type Logger } from '@nixfarm/shared';

/** How every evaluator process is started. */
export interface EvaluatorProcessOptions {
  logger: Logger;
  /** `--option NAME VALUE` pairs for every call (substituters, ...) */
  nixOptions: ReadonlyArray<readonly [string, string]>;
  /** environment overrides for Nix */
  env?: Record<string, string>;
  /** Boehm GC's heap bound for each process (MiB); none when undefined */
  maxMemoryMiB?: number;
  /** a process running longer is killed and its work counts as timed out (ms); none when undefined */
  timeoutMs?: number;
  cwd?: string;
  /** told the pid of each evaluator as it starts (tests kill one this way) */
  onSpawn?: (pid: number) => void;
  signal?: AbortSignal;
}

/** What one nix-instantiate run came to. */
export type EvaluatorOutcome =
  | { kind: 'ok'; stdout: string }
  /** Nix reported an error (its message, without colours and GC warnings) */
  | { kind: 'failed'; message: string }
  /** Boehm GC hit GC_MAXIMUM_HEAP_SIZE: Nix 2.8 prints "error: out of memory" and exits 1 */
  | { kind: 'out-of-memory'; message: string }
  | { kind: 'timed-out' }
  /** killed by a signal it raised itself (SIGSEGV on a stack overflow, SIGABRT): the evaluated code's fault */
  | { kind: 'crashed'; signal: string }
  /** killed from outside (SIGKILL, SIGTERM): retrying may help */
  | { kind: 'killed'; signal: string }
  | { kind: 'cancelled' };

const SELF_INFLICTED = new Set(['SIGSEGV', 'SIGABRT', 'SIGBUS', 'SIGILL', 'SIGFPE']);
const BYTES_PER_MIB = 1024 * 1024;

/** Nix's message without Boehm's warnings (they interleave on stderr) and colours. */
function nixMessage(stderr: string): string {
  return stripTerminalEscapes(stderr)
    .split('\n')
    .filter((line) => !line.startsWith('GC Warning:'))
    .join('\n')
    .trim();
}

/** Runs one `nix-instantiate` with the evaluator's bounds and says how it ended. */
export async function runEvaluator(args: readonly string[], options: EvaluatorProcessOptions): Promise<EvaluatorOutcome> {
  const env: Record<string, string> = { ...options.env };
  if (options.maxMemoryMiB !== undefined) env.GC_MAXIMUM_HEAP_SIZE = String(Math.floor(options.maxMemoryMiB * BYTES_PER_MIB));
  const fullArgs = [...args, ...options.nixOptions.flatMap(([name, value]) => ['--option', name, value])];
  const started = Date.now();
  const child = execa('nix-instantiate', fullArgs, {
    reject: false,
    stdin: 'ignore',
    env,
    maxBuffer: 512 * 1024 * 1024,
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    ...(options.timeoutMs === undefined ? {} : { timeout: options.timeoutMs, killSignal: 'SIGKILL' }),
    ...(options.signal === undefined ? {} : { cancelSignal: options.signal }),
  });
  if (child.pid !== undefined) options.onSpawn?.(child.pid);
  const result = await child;
  options.logger.debug({ argc: fullArgs.length, ms: Date.now() - started, exitCode: result.exitCode, signal: result.signal }, 'evaluator process');
  if (result.isCanceled) return { kind: 'cancelled' };
  if (result.timedOut) return { kind: 'timed-out' };
  if (result.exitCode === 0) return { kind: 'ok', stdout: String(result.stdout) };
  const stderr = String(result.stderr);
  if (result.signal !== undefined) {
    if (options.maxMemoryMiB !== undefined && /out of memory/i.test(stderr)) return { kind: 'out-of-memory', message: nixMessage(stderr) };
    return SELF_INFLICTED.has(result.signal) ? { kind: 'crashed', signal: result.signal } : { kind: 'killed', signal: result.signal };
  }
  if (result.exitCode === undefined) return { kind: 'failed', message: `nix-instantiate did not start: ${result.message}` };
  const message = nixMessage(stderr);
  if (options.maxMemoryMiB !== undefined && /^error: out of memory$/m.test(message)) return { kind: 'out-of-memory', message };
  return { kind: 'failed', message: message === '' ? `nix-instantiate exited with ${result.exitCode}` : message };
}
