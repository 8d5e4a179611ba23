// The big-closure part of `npm run bench` (`--only closure-1g`): a 1 GiB
// output built on one worker and used by a derivation on the other, so it
// travels out to the coordinator and in to the other worker, beside the
// peer the issue names: `nix-store --export | nix-store --import` into another
// store on the same machine (Nix's own import sets that pace). Also the peak
// RSS of the coordinator's and the workers' Node processes: the copy must
// stream. And Nix's own remote builds of the same closure (`nix-build -j0
// --builders` to two simulated machines with sshd), timed overall beside
// nixfarm's whole build.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runIdOf } from '../harness/build-timeline.js';
import { freshSalt, writeBusyboxDir } from '../harness/nix-fixtures.js';
import { SimulatedMachine } from '../harness/simulated-machine.js';
import { SshBuilderMachine } from '../harness/ssh-builder-machine.js';
import { SshClientConfig } from '../harness/ssh-client-config.js';
import { TestFarm } from '../harness/test-farm.js';
import { ProcessTable } from './foreign-cpu.js';
import { median } from './statistics.js';
import { benchSection } from './text-table.js';
import { runTimed } from './timed-process.js';

export interface ClosureBenchOptions {
  dir: string;
  reps: number;
  quick: boolean;
  timeoutMs: number;
  say: (line: string) => void;
}

export interface ClosureBenchReport {
  mebibytes: number;
  reps: number;
  /** nix-store --export of the output's closure piped into nix-store --import in a fresh store, ms */
  pipeMs: number;
  /** nix-store --dump of the output to /dev/null, ms: reading alone */
  dumpMs: number;
  /** the producer's copy-out (worker to coordinator) and the consumer's copy-in (coordinator to the other worker), ms */
  copyOutMs: number;
  copyInMs: number;
  /** the whole two-derivation build, ms: nixfarm (`nixfarm build`'s start to exit) and Nix's `nix-build -j0 --builders` to two ssh:// machines */
  nixfarmBuildMs: number;
  nixBuildersMs: number;
  /** peak resident set (VmHWM) of the Node processes over the farm's life, bytes */
  coordinatorPeakRssBytes: number;
  workerPeakRssBytes: number;
  goals: Array<{ goal: string; measured: string; met: boolean }>;
}

const MIB = 1024 * 1024;
const NIX = ['--option', 'sandbox', 'true', '--option', 'substituters', '', '--option', 'system-features', 'big-producer big-consumer'];

/**
 * `big`: a directory with one file of `mib` MiB, random (nothing compresses) or
 * text (one line repeated, compresses a thousandfold), built where the
 * `producer` feature is; `use` reads it where `consumer` is.
 */
export function closureFixture(dir: string): string {
  writeBusyboxDir(dir);
  const file = join(dir, 'closure.nix');
  writeFileSync(
    file,
    `{ salt ? "", mib ? 1024, content ? "random", producer ? "big-producer", consumer ? "big-consumer" }:
let
  bb = builtins.path { path = ./busybox; name = "busybox"; };
  mk = name: features: script: derivation { inherit name; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; args = [ "-c" script ]; requiredSystemFeatures = features; };
  source = if content == "random" then "\${bb}/bin/busybox cat /dev/urandom" else "\${bb}/bin/busybox yes 'a compressible line of a big closure'";
in rec {
  big = mk "closure-big-\${salt}" [ producer ] "\${bb}/bin/busybox mkdir $out && \${source} | \${bb}/bin/busybox head -c \${toString (mib * 1048576)} > $out/blob";
  use = mk "closure-use-\${salt}" [ consumer ] "\${bb}/bin/busybox wc -c \${big}/blob > $out";
}
`,
  );
  return file;
}

/** VmHWM of a process, bytes (0 when gone). */
function peakRss(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const kib = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kib === undefined ? 0 : Number(kib) * 1024;
  } catch {
    return 0;
  }
}

/** The Node process under a simulated machine's wrapper (unshare, sh): the largest peak among the tree's node processes. */
function nodePeakRss(root: number | undefined): number {
  const table = new ProcessTable();
  return Math.max(
    0,
    ...table.tree(root).map((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'node' ? peakRss(pid) : 0;
      } catch {
        return 0;
      }
    }),
  );
}

/** Exports `paths` from the host store into a fresh simulated machine's store, through a pipe; ms. */
async function exportImport(dir: string, paths: readonly string[]): Promise<number> {
  const machine = new SimulatedMachine(`pipe-${freshSalt().slice(0, 6)}`, { root: join(dir, 'machines') });
  try {
    const started = performance.now();
    const exporter = spawn('nix-store', ['--export', ...paths], { stdio: ['ignore', 'pipe', 'pipe'] });
    const importer = machine.spawn('nix-store', ['--import'], { stdio: ['pipe', 'ignore', 'pipe'] });
    exporter.stdout.pipe(importer.stdin!);
    const [exported, imported] = await Promise.all([
      new Promise<number | null>((resolve) => exporter.once('close', resolve)),
      new Promise<number | null>((resolve) => importer.once('close', resolve)),
    ]);
    if (exported !== 0 || imported !== 0) throw new Error(`export ${exported} | import ${imported} failed`);
    return performance.now() - started;
  } finally {
    await machine.destroy();
  }
}

/**
 * Nix's own remote builds of the same closure: `nix-build -j0 --builders` with
 * one ssh:// machine for each feature, so `big` is built on the first, copied
 * back to the host store (out), then to the second for `use` (in), each over
 * OpenSSH's `nix-store --serve`. Fresh machines and salt; the whole build, ms.
 */
async function nixBuilders(dir: string, file: string, mebibytes: number, timeoutMs: number): Promise<number> {
  const root = join(dir, `builders-${freshSalt().slice(0, 6)}`);
  const client = new SshClientConfig(join(root, 'ssh-client'));
  const machines: SshBuilderMachine[] = [];
  try {
    for (const feature of ['big-producer', 'big-consumer'])
      machines.push(
        await SshBuilderMachine.start(`nb-${feature}`, {
          root: join(root, 'machines'),
          authorizedKey: client.publicKey,
          nixConfig: [`system-features = ${feature}`],
        }),
      );
    client.writeHosts(machines.map((m) => ({ alias: m.name, port: m.port, hostPublicKey: m.hostPublicKey })));
    const system = (await runTimed('nix-instantiate', ['--eval', '--expr', 'builtins.currentSystem', '--json'], { timeoutMs: 30_000 })).stdout
      .trim()
      .replace(/"/g, '');
    // URI, systems, key (from the ssh config), jobs, speed factor, supported features
    const spec = machines.map((m) => `ssh://${m.name} ${system} - 1 1 ${m.name.slice('nb-'.length)}`).join(' ; ');
    const built = await runTimed(
      'nix-build',
      [
        file,
        '-A',
        'use',
        '--argstr',
        'salt',
        freshSalt(),
        '--arg',
        'mib',
        String(mebibytes),
        '--no-out-link',
        '-j0',
        '--builders',
        spec,
        ...NIX,
        '--option',
        'builders-use-substitutes',
        'false',
      ],
      { timeoutMs, env: { ...process.env, NIX_SSHOPTS: client.nixSshOpts() } },
    );
    if (built.exitCode !== 0)
      throw new Error(
        `nix-build --builders failed:\n${built.stderrLines
          .map((l) => l.text)
          .slice(-20)
          .join('\n')}\n${machines.map((m) => m.logTail(10)).join('\n')}`,
      );
    return built.endedAt - built.startedAt;
  } finally {
    for (const m of machines) await m.destroy();
  }
}

export async function runClosureBench(options: ClosureBenchOptions): Promise<ClosureBenchReport> {
  const { say } = options;
  const mebibytes = options.quick ? 64 : 1024;
  const dir = join(options.dir, 'closure');
  mkdirSync(dir, { recursive: true });
  const file = closureFixture(dir);
  const pipe: number[] = [];
  const dump: number[] = [];
  for (let rep = 0; rep < options.reps; rep++) {
    const salt = freshSalt();
    const built = await runTimed('nix-build', [file, '-A', 'big', '--argstr', 'salt', salt, '--arg', 'mib', String(mebibytes), '--no-out-link', ...NIX], {
      timeoutMs: options.timeoutMs,
    });
    const out = built.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith('/nix/store/'))
      .at(-1);
    if (built.exitCode !== 0 || out === undefined) throw new Error(`nix-build of the ${mebibytes} MiB output failed`);
    const dumped = await runTimed('sh', ['-c', 'nix-store --dump "$1" > /dev/null', 'dump', out], { timeoutMs: options.timeoutMs });
    dump.push(dumped.endedAt - dumped.startedAt);
    const closure = (await runTimed('nix-store', ['-qR', out], { timeoutMs: 60_000 })).stdout.split('\n').filter((l) => l.trim() !== '');
    pipe.push(await exportImport(dir, closure));
    say(
      `closure-1g: ${mebibytes} MiB: nix-store --export | nix-store --import ${(pipe.at(-1)! / 1000).toFixed(2)} s, --dump alone ${(dump.at(-1)! / 1000).toFixed(2)} s`,
    );
  }

  const farm = await TestFarm.start({
    workers: [
      { name: 'bench-1', features: ['big-producer'], maxJobs: 1 },
      { name: 'bench-2', features: ['big-consumer'], maxJobs: 1 },
    ],
    logLevel: 'info',
  });
  const copyOut: number[] = [];
  const copyIn: number[] = [];
  const whole: number[] = [];
  let coordinatorPeak = 0;
  let workerPeak = 0;
  try {
    for (let rep = 0; rep < options.reps; rep++) {
      const started = performance.now();
      const result = await farm.build([file, '-A', 'use', '--argstr', 'salt', freshSalt(), '--arg', 'mib', String(mebibytes)], {
        timeoutMs: options.timeoutMs,
      });
      whole.push(performance.now() - started);
      if (result.exitCode !== 0) throw new Error(`nixfarm build failed:\n${result.stderr}\n${farm.diagnostics()}`);
      const { derivations } = await farm.api<{ derivations: Array<{ name: string; worker?: string; timings?: { copyInMs: number; copyOutMs: number } }> }>(
        `/api/runs/${runIdOf(result.stderr)}/derivations`,
      );
      const big = derivations.find((d) => d.name.startsWith('closure-big-'));
      const use = derivations.find((d) => d.name.startsWith('closure-use-'));
      if (big?.worker !== 'bench-1' || use?.worker !== 'bench-2' || big.timings === undefined || use.timings === undefined)
        throw new Error(`the output did not travel between the workers: ${JSON.stringify(derivations)}`);
      copyOut.push(big.timings.copyOutMs);
      copyIn.push(use.timings.copyInMs);
      say(
        `closure-1g: nixfarm copy out ${(big.timings.copyOutMs / 1000).toFixed(2)} s (bench-1 to the coordinator), copy in ${(use.timings.copyInMs / 1000).toFixed(2)} s (to bench-2), whole build ${(whole.at(-1)! / 1000).toFixed(2)} s`,
      );
    }
    coordinatorPeak = peakRss(farm.coordinator.pid);
    workerPeak = Math.max(...['bench-1', 'bench-2'].map((n) => nodePeakRss(farm.workers.get(n)?.process.pid)));
  } finally {
    await farm.stop();
  }
  const builders: number[] = [];
  for (let rep = 0; rep < options.reps; rep++) {
    builders.push(await nixBuilders(dir, file, mebibytes, options.timeoutMs));
    say(`closure-1g: nix-build -j0 --builders (two ssh:// machines), the whole build ${(builders.at(-1)! / 1000).toFixed(2)} s`);
  }
  const pipeMs = median(pipe) ?? Number.NaN;
  const copyOutMs = median(copyOut) ?? Number.NaN;
  const copyInMs = median(copyIn) ?? Number.NaN;
  const ratio = (ms: number): string => `${(ms / 1000).toFixed(2)} s against ${(pipeMs / 1000).toFixed(2)} s (${(ms / pipeMs).toFixed(2)}x)`;
  return {
    mebibytes,
    reps: options.reps,
    pipeMs,
    dumpMs: median(dump) ?? Number.NaN,
    copyOutMs,
    copyInMs,
    nixfarmBuildMs: median(whole) ?? Number.NaN,
    nixBuildersMs: median(builders) ?? Number.NaN,
    coordinatorPeakRssBytes: coordinatorPeak,
    workerPeakRssBytes: workerPeak,
    goals: [
      { goal: 'copy out at most 1.1x the export/import pipe', measured: ratio(copyOutMs), met: copyOutMs <= 1.1 * pipeMs },
      { goal: 'copy in at most 1.1x the export/import pipe', measured: ratio(copyInMs), met: copyInMs <= 1.1 * pipeMs },
      {
        goal: "the coordinator's and the workers' peak RSS at most 256 MiB",
        measured: `${Math.round(coordinatorPeak / MIB)} MiB and ${Math.round(workerPeak / MIB)} MiB`,
        met: coordinatorPeak <= 256 * MIB && workerPeak <= 256 * MIB,
      },
    ],
  };
}

export function formatClosureReport(r: ClosureBenchReport): string {
  const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
  const rows = [
    ['nix-store --dump to /dev/null (reading alone)', s(r.dumpMs), '-'],
    ['nix-store --export | nix-store --import (the peer)', s(r.pipeMs), '1.00x'],
    ['nixfarm copy out (worker to coordinator)', s(r.copyOutMs), `${(r.copyOutMs / r.pipeMs).toFixed(2)}x`],
    ['nixfarm copy in (coordinator to the other worker)', s(r.copyInMs), `${(r.copyInMs / r.pipeMs).toFixed(2)}x`],
    ['nixfarm, the whole build (both derivations, both copies)', s(r.nixfarmBuildMs), `${(r.nixfarmBuildMs / r.pipeMs).toFixed(2)}x`],
    ['nix-build -j0 --builders, the whole build (two ssh:// machines)', s(r.nixBuildersMs), `${(r.nixBuildersMs / r.pipeMs).toFixed(2)}x`],
  ];
  return benchSection(
    `\na ${r.mebibytes} MiB output travelling out and in, median of ${r.reps}; peak RSS: coordinator ${Math.round(r.coordinatorPeakRssBytes / MIB)} MiB, workers ${Math.round(r.workerPeakRssBytes / MIB)} MiB:`,
    ['copy', 'time', 'vs pipe'],
    rows,
    r.goals,
  );
}
