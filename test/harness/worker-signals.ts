import type { TestFarm } from './test-farm.js';
import { killGroup } from './process-cleanup.js';

/**
 * Signals for a farm's worker processes without waiting on them (unlike
 * TestFarm.stopWorker, which waits 15 s at most): a drain may take longer,
 * and a test sends a second signal while the first one is being handled.
 */
export function signalWorker(farm: TestFarm, name: string, signal: NodeJS.Signals): void {
  const worker = farm.workers.get(name);
  if (worker === undefined) throw new Error(`no worker ${name} in this farm`);
  // the whole group, as a terminal's Ctrl-C or a service manager's stop would
  killGroup(worker.process.pid, signal);
}

/** The worker process's exit code (null: killed by a signal), or 'running' when it has not exited within timeoutMs. */
export async function workerExit(farm: TestFarm, name: string, timeoutMs: number): Promise<number | null | 'running'> {
  const child = farm.workers.get(name)?.process;
  if (child === undefined) throw new Error(`no worker ${name} in this farm`);
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'running'>((resolve) => (timer = setTimeout(() => resolve('running'), timeoutMs)));
  try {
    return await Promise.race([exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
