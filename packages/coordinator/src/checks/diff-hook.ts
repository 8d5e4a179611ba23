import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { ValidationError, type Logger } from '@nixfarm/shared';

export interface RunDiffHookOptions {
  /** the user's --diff-hook: an absolute path or a name on the coordinator's PATH */
  program: string;
  /** the coordinator's copy of the output */
  expected: string;
  /** the rebuilt copy, restored outside the store */
  actual: string;
  drvPath: string;
  /** a working directory for the hook (Nix passes the build directory) */
  workDir: string;
  /** 60 s by default; the hook is then stopped and its output so far reported */
  timeoutMs?: number;
  logger: Logger;
}

export interface DiffHookResult {
  /** the hook's exit code; undefined when it did not exit by itself (it could not start, timed out or was killed) */
  exitCode: number | undefined;
  /** its stdout and stderr as they came, at most 64 KiB; then a line saying why it failed when it did not exit 0 */
  output: string;
  timedOut: boolean;
  /** output beyond 64 KiB was dropped */
  truncated: boolean;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const OUTPUT_CAP = 64 * 1024;
/** after SIGTERM, how long a timed-out hook gets before SIGKILL */
const FORCE_KILL_AFTER_MS = 2_000;

/**
 * The coordinator's --diff-hook, checked at start rather than at the first
 * difference: one program (a path, or a name on PATH, as Nix's diff-hook)
 * that exists and may be run. Returns the value.
 */
export async function checkDiffHookProgram(value: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if (value.length === 0) throw new ValidationError('--diff-hook is empty: give the path of a program (or a name on PATH)');
  if (/\s/.test(value)) {
    throw new ValidationError(
      `--diff-hook ${JSON.stringify(value)} contains whitespace: give a program, not a command line: Nix's diff-hook takes a program too; wrap arguments in a script`,
    );
  }
  const candidates = value.includes('/')
    ? [value]
    : (env.PATH ?? '')
        .split(':')
        .filter((d) => d !== '')
        .map((d) => join(d, value));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return value;
    } catch {
      // not here, or not executable: the next one
    }
  }
  throw new ValidationError(
    value.includes('/')
      ? `--diff-hook ${value} does not exist or is not executable: give a program the coordinator's user may run (chmod +x)`
      : `--diff-hook ${value} is not on the coordinator's PATH: give its full path`,
  );
}

/**
 * Runs the user's diff hook as Nix runs its `diff-hook` after a `--check`
 * build that differs: with the two outputs, the .drv path and a working
 * directory as arguments, in '/', without a shell. The hook's own failure
 * (an exit code, a timeout, a program that does not exist) is in the result,
 * never thrown: the check's verdict does not depend on it.
 */
export async function runDiffHook(options: RunDiffHookOptions): Promise<DiffHookResult> {
  const { program, logger } = options;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const started = Date.now();
  const hook = execa(program, [options.expected, options.actual, options.drvPath, options.workDir], {
    cwd: '/',
    stdin: 'ignore',
    all: true,
    buffer: false,
    reject: false,
    // its own process group: a timeout stops the programs the hook started too, which would otherwise hold its output open
    detached: true,
  });
  let timedOut = false;
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      if (hook.pid !== undefined) process.kill(-hook.pid, signal);
    } catch {
      // the group is gone already
    }
  };
  let forceKill: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    signalGroup('SIGTERM');
    forceKill = setTimeout(() => signalGroup('SIGKILL'), FORCE_KILL_AFTER_MS);
  }, timeoutMs);
  const kept: Buffer[] = [];
  let keptBytes = 0;
  let truncated = false;
  // Read to the end even past the cap, so that a talkative hook never blocks on a full pipe
  hook.all?.on('data', (chunk: Buffer) => {
    const room = OUTPUT_CAP - keptBytes;
    if (chunk.length > room) truncated = true;
    if (room <= 0) return;
    const part = chunk.subarray(0, room);
    kept.push(part);
    keptBytes += part.length;
  });
  const result = await hook.finally(() => {
    clearTimeout(timer);
    clearTimeout(forceKill);
  });
  let output = Buffer.concat(kept).toString('utf8');
  const why = failureOf(program, result, timedOut, timeoutMs);
  if (why !== undefined) output += `${output === '' || output.endsWith('\n') ? '' : '\n'}${why}\n`;
  const log = { program, drvPath: options.drvPath, exitCode: result.exitCode, ms: Date.now() - started };
  if (why === undefined) logger.debug(log, 'diff hook ran');
  else logger.warn(log, `diff hook failed: ${why}`);
  return { exitCode: timedOut ? undefined : result.exitCode, output, timedOut, truncated };
}

type HookOutcome = { exitCode?: number; signal?: string; code?: string; shortMessage?: string };

function failureOf(program: string, result: HookOutcome, timedOut: boolean, timeoutMs: number): string | undefined {
  if (timedOut)
    return `diff hook ${program} did not finish within ${timeoutMs < 1000 ? `${timeoutMs} ms` : `${Math.round(timeoutMs / 1000)} s`} and was stopped`;
  if (result.exitCode === 0) return undefined;
  if (result.code === 'ENOENT') return `diff hook ${program} not found: give an absolute path or the name of a program on the coordinator's PATH`;
  if (result.code === 'EACCES') return `diff hook ${program} cannot be run (permission denied): make it executable`;
  if (result.exitCode !== undefined) return `diff hook ${program} exited with code ${result.exitCode}`;
  if (result.signal !== undefined) return `diff hook ${program} was killed by ${result.signal}`;
  return `diff hook ${program} could not run: ${result.shortMessage ?? 'no reason given'}`;
}
