import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { killGroup, onProcessExit, withParentDeathSignal } from '../harness/process-cleanup.js';

/** A line of a child's stderr with the time (ms since the epoch, sub-ms) it arrived. */
export interface TimedLine {
  at: number;
  text: string;
}

export interface TimedProcessResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** spawn to exit, ms */
  startedAt: number;
  endedAt: number;
  stdout: string;
  stderrLines: TimedLine[];
}

export interface TimedProcessOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs: number;
  /** called with every stderr line as it arrives (progress) */
  onLine?: (line: TimedLine) => void;
}

/** Wall clock with sub-millisecond resolution, comparable with Date.now(). */
function preciseNow(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Runs a command to completion and timestamps each stderr line on arrival:
 * Nix writes its internal-json log unbuffered, so arrival time is when Nix
 * logged it, give or take the event loop. Never rejects on a non-zero exit.
 */
export function runTimed(command: string, args: readonly string[], options: TimedProcessOptions): Promise<TimedProcessResult> {
  return new Promise((resolve, reject) => {
    const startedAt = preciseNow();
    // own process group: a timeout kills the command and its children (build hooks, ssh)
    const wrapped = withParentDeathSignal(command, args);
    const child = spawn(wrapped.command, wrapped.args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env, detached: true });
    const unregister = onProcessExit(() => killGroup(child.pid, 'SIGKILL'));
    const stdout: Buffer[] = [];
    const stderrLines: TimedLine[] = [];
    let partial = '';
    child.stdout.on('data', (c: Buffer) => stdout.push(c));
    child.stderr.on('data', (c: Buffer) => {
      const at = preciseNow();
      const parts = (partial + c.toString()).split('\n');
      partial = parts.pop() ?? '';
      for (const text of parts) {
        const line = { at, text };
        stderrLines.push(line);
        options.onLine?.(line);
      }
    });
    const timer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), options.timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      unregister();
      reject(error);
    });
    child.once('close', (exitCode, signal) => {
      const endedAt = preciseNow();
      clearTimeout(timer);
      unregister();
      // what the command left behind in its group (an ssh of a build hook) goes with it
      killGroup(child.pid, 'SIGKILL');
      if (partial.length > 0) stderrLines.push({ at: endedAt, text: partial });
      resolve({ exitCode, signal, startedAt, endedAt, stdout: Buffer.concat(stdout).toString(), stderrLines });
    });
  });
}
