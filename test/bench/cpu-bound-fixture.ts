import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HOST_BUSYBOX, writeBusyboxDir, type Fixture } from '../harness/nix-fixtures.js';

export interface CpuBoundFixture extends Fixture {
  /** MiB of zeros each derivation hashes */
  mebibytes: number;
}

/** The work of one CPU-bound builder: hash this many MiB of zeros with busybox (sha256sum, plus dd feeding it). */
function burnScript(busybox: string, mebibytes: number): string {
  return `${busybox} dd if=/dev/zero bs=1048576 count=${mebibytes} 2>/dev/null | ${busybox} sha256sum`;
}

/** CPU time (user + system, ms) of this process's reaped children so far, from /proc/self/stat (cutime, cstime). */
function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // after the name: state(0) ... cutime(13) cstime(14), in 1/100 s
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

/**
 * How many MiB make one builder burn about `seconds` of CPU on this machine:
 * the CPU time (not wall time, which other processes on a shared machine
 * would stretch) of the same pipeline on the host, least of three runs; the
 * sandboxed builder runs the same static busybox on the same CPU.
 */
export function calibrateMebibytes(seconds: number): number {
  const probe = 64;
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 3; i++) {
    const before = childrenCpuMs();
    const result = spawnSync(HOST_BUSYBOX, ['sh', '-c', burnScript(HOST_BUSYBOX, probe)], { stdio: 'ignore' });
    if (result.status !== 0) throw new Error(`calibration run of ${HOST_BUSYBOX} failed (${result.status ?? result.signal})`);
    best = Math.min(best, childrenCpuMs() - before);
  }
  if (!(best > 0)) throw new Error('calibration measured no CPU time');
  return Math.max(1, Math.round((probe * seconds * 1000) / best));
}

/**
 * `count` independent derivations `burn-0` .. `burn-<count-1>`, each hashing
 * `mebibytes` MiB of zeros; attrs names each of them (no aggregate on top, so
 * the workload is exactly the CPU-bound builds). Takes `{ salt ? "" }`.
 */
export function cpuBoundFixture(dir: string, count: number, mebibytes: number): CpuBoundFixture {
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(mebibytes) || mebibytes < 1)
    throw new Error('cpuBoundFixture needs count >= 1 and mebibytes >= 1');
  writeBusyboxDir(dir);
  const attrs: string[] = [];
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = `burn-${i}`;
    attrs.push(name);
    lines.push(`  ${name} = mk "${name}";`);
  }
  const text = `{ salt ? "" }:
let
  bb = builtins.path { path = ./busybox; name = "busybox"; };
  quoted = "'" + builtins.replaceStrings [ "'" ] [ "'\\\\''" ] salt + "'";
  mk = name: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "\${bb}/bin/sh";
    args = [ "-c" ("echo " + name + " salt=" + quoted + "; ${burnScript('${bb}/bin/busybox', mebibytes)} > $out") ];
  };
in
{
${lines.join('\n')}
}
`;
  const file = join(dir, `cpu-bound-${count}x${mebibytes}.nix`);
  writeFileSync(file, text);
  return { file, attrs, expectedDrvCount: count, mebibytes };
}
