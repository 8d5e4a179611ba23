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
const TICKS_PER_SECOND = 100;

function machineBusyTicks(): number {
  const cpuLine = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  // cpu user nice system idle iowait irq softirq steal ...: busy = user + nice + system + irq + softirq
  const [, user, nice, system, , , irq, softirq] = cpuLine.trim().split(/\s+/).map(Number);
  return (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0);
}

interface ProcessTimes {
  parent: number;
  ticks: number;
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
    const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    out.set(Number(entry), { parent: Number(fields[1]), ticks: Number.isFinite(ticks) ? ticks : 0 });
  }
  return out;
}

export function cpuSnapshot(): CpuSnapshot {
  const times = processTimes();
  const children = new Map<number, number[]>();
  for (const [pid, t] of times) children.set(t.parent, [...(children.get(t.parent) ?? []), pid]);
  let benchTicks = 0;
  const stack = [process.pid];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    benchTicks += times.get(pid)?.ticks ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return { at: Date.now(), machineBusyTicks: machineBusyTicks(), benchTicks };
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
