import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';

/**
 * How much of the machine other processes used while the bench ran: the
 * machine's busy CPU time (/proc/stat) minus the bench's own, which is the
 * CPU time of this process and all its live descendants plus what they have
 * reaped (a reaped child's time lands in its parent's cutime/cstime). Both
 * in clock ticks, so only differences between two snapshots mean anything.
 */
export interface CpuSnapshot {
  at: number;
  machineBusyTicks: number;
  benchTicks: number;
}

/** USER_HZ: Linux reports both /proc files in 1/100 s on every common platform. */
export const TICKS_PER_SECOND = 100;

/** The machine's busy CPU ticks so far (all processes, kernel work included). */
export function machineBusyTicks(): number {
  const cpuLine = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  // cpu user nice system idle iowait irq softirq steal ...: busy = user + nice + system + irq + softirq
  const [, user, nice, system, , , irq, softirq] = cpuLine.trim().split(/\s+/).map(Number);
  return (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0);
}

interface ProcessTimes {
  parent: number;
  /** utime + stime: the process's own CPU */
  own: number;
  /** cutime + cstime: what its reaped children used */
  reaped: number;
}

function processTimes(): Map<number, ProcessTimes> {
  const out = new Map<number, ProcessTimes>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // the command name may hold spaces and parentheses: fields start after the last ')'
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    const own = Number(fields[11]) + Number(fields[12]);
    const reaped = Number(fields[13]) + Number(fields[14]);
    out.set(Number(entry), { parent: Number(fields[1]), own: Number.isFinite(own) ? own : 0, reaped: Number.isFinite(reaped) ? reaped : 0 });
  }
  return out;
}

/** Every process's CPU times at one moment, to ask about several processes and their trees alike. */
export class ProcessTable {
  private readonly times = processTimes();
  private readonly children = new Map<number, number[]>();

  constructor() {
    for (const [pid, t] of this.times) this.children.set(t.parent, [...(this.children.get(t.parent) ?? []), pid]);
  }

  /** A process's own CPU ticks (utime + stime); 0 once it is gone. */
  ownTicks(pid: number | undefined): number {
    return pid === undefined ? 0 : (this.times.get(pid)?.own ?? 0);
  }

  /** CPU ticks of a process and all its live descendants, plus what they have reaped. */
  treeTicks(root: number | undefined): number {
    return this.tree(root).reduce((ticks, pid) => ticks + (this.times.get(pid)?.own ?? 0) + (this.times.get(pid)?.reaped ?? 0), 0);
  }

  /** A process and all its live descendants. */
  tree(root: number | undefined): number[] {
    if (root === undefined || !this.times.has(root)) return [];
    const pids: number[] = [];
    const stack = [root];
    while (stack.length > 0) {
      const pid = stack.pop()!;
      pids.push(pid);
      stack.push(...(this.children.get(pid) ?? []));
    }
    return pids;
  }
}

export function cpuSnapshot(): CpuSnapshot {
  return { at: Date.now(), machineBusyTicks: machineBusyTicks(), benchTicks: new ProcessTable().treeTicks(process.pid) };
}

/** Cores' worth of CPU that processes outside the bench used between two snapshots (0 = the machine was the bench's alone). */
export function foreignCores(before: CpuSnapshot, after: CpuSnapshot): number {
  const seconds = (after.at - before.at) / 1000;
  if (seconds <= 0) return 0;
  const foreignTicks = after.machineBusyTicks - before.machineBusyTicks - (after.benchTicks - before.benchTicks);
  return Math.max(0, Math.min(cpus().length, foreignTicks / TICKS_PER_SECOND / seconds));
}

/**
 * Waits until processes outside the bench use less than `maxCores` over a
 * 2-second window, or until `timeoutSeconds` passed; returns the last reading.
 */
export async function waitForQuietMachine(maxCores: number, timeoutSeconds: number): Promise<number> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  for (;;) {
    const before = cpuSnapshot();
    await new Promise((r) => setTimeout(r, 2000));
    const used = foreignCores(before, cpuSnapshot());
    if (used < maxCores || Date.now() >= deadline) return used;
  }
}
