import { existsSync, rmSync } from 'node:fs';
import { spawnSync, type ChildProcess } from 'node:child_process';

/**
 * Test processes (redis-server, simulated machines' workers and sshds) must
 * never outlive the test file that started them: a leftover worker would take
 * jobs from the next test's queues. Each harness registers a synchronous
 * cleanup here; they run on normal exit and on SIGINT/SIGTERM/SIGHUP. A test
 * process killed with SIGKILL cannot clean up, which is why children are also
 * started under `setpriv --pdeathsig KILL` (see withParentDeathSignal).
 */
type Cleanup = () => void;

const cleanups = new Set<Cleanup>();
let installed = false;

function runAll(): void {
  // last registered first, like deferred calls: a machine is cleaned up before the directory that holds it
  for (const cleanup of [...cleanups].reverse()) {
    cleanups.delete(cleanup);
    try {
      cleanup();
    } catch {
      // best effort: one failed cleanup must not keep the others from running
    }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      runAll();
      // Re-raise with the default action unless someone else (a coordinator
      // under test, the test runner) handles the signal and decides.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

/** Registers a synchronous cleanup; returns a function that unregisters it (call it after a normal async teardown). */
export function onProcessExit(cleanup: Cleanup): () => void {
  install();
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/** Stops a detached child's process group: SIGTERM, up to graceMs for it to exit, then SIGKILL for whatever is left. */
export async function terminateGroup(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    killGroup(child.pid, 'SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, graceMs))]);
  }
  killGroup(child.pid, 'SIGKILL');
}

/** Sends a signal to a whole process group; silent when the group is gone already. */
export function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: already gone
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/**
 * Prefixes a command so that the kernel kills it when the test process dies,
 * even by SIGKILL. The death signal survives exec (unshare, sh, then the
 * command keep it), but not fork: grandchildren need the group kill.
 */
export function withParentDeathSignal(command: string, args: readonly string[]): { command: string; args: string[] } {
  if (SETPRIV === undefined) return { command, args: [...args] };
  return { command: SETPRIV, args: ['--pdeathsig', 'KILL', '--', command, ...args] };
}

/** Removes a tree that may hold read-only Nix store objects (Nix makes them r-x). */
export function removeTreeSync(dir: string): void {
  if (!existsSync(dir)) return;
  spawnSync('chmod', ['-R', 'u+w', '--', dir], { stdio: 'ignore' });
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}
