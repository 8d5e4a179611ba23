import { readdirSync, readFileSync } from 'node:fs';

/** A process as /proc shows it. */
export interface ChildProcessInfo {
  pid: number;
  /** NUL-separated arguments */
  cmdline: string;
}

/** The running processes named `command` whose parent is `parent` (e.g. the coordinator's nix-instantiate evaluators). */
export function childProcesses(parent: number, command: string): ChildProcessInfo[] {
  const found: ChildProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read around its last closing parenthesis
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (comm !== command || ppid !== parent) continue;
      found.push({ pid: Number(entry), cmdline: readFileSync(`/proc/${entry}/cmdline`, 'utf8') });
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}
