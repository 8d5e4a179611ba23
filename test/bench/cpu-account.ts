import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onProcessExit } from '../harness/process-cleanup.js';

/** cgroup v1's CPU accounting hierarchy, where this machine mounts it. */
const CPUACCT = '/sys/fs/cgroup/cpuacct';

/**
 * The CPU time of a set of processes and of everything they start from then
 * on, through a cgroup of its own (v1 cpuacct): unlike /proc's per-process
 * times, it keeps what orphans use (Nix's sandboxed builders are reparented
 * to init, which would reap them and their time). Undefined where cgroups
 * cannot be made (not root, no cpuacct).
 */
export class CpuAccount {
  private constructor(
    private readonly dir: string,
    private readonly unregister: () => void,
  ) {}

  static create(name: string): CpuAccount | undefined {
    const dir = join(CPUACCT, `nixfarm-bench-${process.pid}-${name}`);
    try {
      mkdirSync(dir);
    } catch {
      return undefined;
    }
    // its processes are gone by then (the farm stops first, or they die with the bench)
    const unregister = onProcessExit(() => removeGroup(dir));
    return new CpuAccount(dir, unregister);
  }

  /** Moves these processes in; their later children follow by inheritance. Processes that ended meanwhile are skipped. */
  add(pids: readonly number[]): void {
    for (const pid of pids) {
      try {
        writeFileSync(join(this.dir, 'cgroup.procs'), String(pid));
      } catch {
        // ended
      }
    }
  }

  /** CPU seconds used in the group so far. */
  seconds(): number {
    return Number(readFileSync(join(this.dir, 'cpuacct.usage'), 'utf8').trim()) / 1e9;
  }

  /** Removes the group once its processes have ended. */
  close(): void {
    this.unregister();
    removeGroup(this.dir);
  }
}

function removeGroup(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // gone already, or a process of it still dying: the empty group then stays behind, harmless
  }
}
