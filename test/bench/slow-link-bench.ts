// The slow-link part of `npm run bench` (`--only closure-slow-link`): a
// compressible output (256 MiB of one repeated line) built on one worker and
// used on another, every worker reaching the coordinator's SSH endpoint
// through the test relay throttled to 100 Mbit/s each way, once with the
// workers' default `--copy-compression none` and once with `zlib`, side by
// side: copy-out and copy-in times and the bytes each copy put on the wire.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { runIdOf } from '../harness/build-timeline.js';
import { freshSalt } from '../harness/nix-fixtures.js';
import { TestFarm } from '../harness/test-farm.js';
import { closureFixture } from './closure-bench.js';
import { benchSection } from './text-table.js';
import { runTimed } from './timed-process.js';

export interface SlowLinkBenchOptions {
  dir: string;
  quick: boolean;
  timeoutMs: number;
  say: (line: string) => void;
}

export interface SlowLinkRow {
  compression: 'none' | 'zlib';
  /** worker to coordinator, and coordinator to the other worker, ms */
  copyOutMs: number;
  copyInMs: number;
  /** bytes the relay carried up from the producer during its build, and down to the consumer during its (the copies, plus the small inputs and chatter) */
  wireOutBytes: number;
  wireInBytes: number;
}

export interface SlowLinkBenchReport {
  mebibytes: number;
  /** the relay's rate each way, bytes per second */
  bytesPerSecond: number;
  /** the output's NAR size, bytes */
  narBytes: number;
  rows: SlowLinkRow[];
}

const MIB = 1024 * 1024;
/** 100 Mbit/s */
const RATE = 100_000_000 / 8;
const MODES = ['none', 'zlib'] as const;

export async function runSlowLinkBench(options: SlowLinkBenchOptions): Promise<SlowLinkBenchReport> {
  const { say } = options;
  const mebibytes = options.quick ? 16 : 256;
  const dir = join(options.dir, 'slow-link');
  mkdirSync(dir, { recursive: true });
  const file = closureFixture(dir);
  const farm = await TestFarm.start({
    workers: MODES.flatMap((mode) =>
      (['producer', 'consumer'] as const).map((role) => ({
        name: `slow-${mode}-${role}`,
        features: [`slow-${mode}-${role}`],
        viaProxy: true,
        linkBytesPerSecond: RATE,
        extraArgs: ['--copy-compression', mode],
      })),
    ),
    logLevel: 'info',
  });
  const rows: SlowLinkRow[] = [];
  let narBytes = 0;
  try {
    for (const mode of MODES) {
      const producer = farm.workers.get(`slow-${mode}-producer`)!.link!;
      const consumer = farm.workers.get(`slow-${mode}-consumer`)!.link!;
      const before = { up: producer.bytes.up, down: consumer.bytes.down };
      const args = [file, '-A', 'use', '--argstr', 'salt', freshSalt(), '--arg', 'mib', String(mebibytes), '--argstr', 'content', 'text'];
      args.push('--argstr', 'producer', `slow-${mode}-producer`, '--argstr', 'consumer', `slow-${mode}-consumer`);
      const result = await farm.build(args, { timeoutMs: options.timeoutMs });
      if (result.exitCode !== 0) throw new Error(`nixfarm build failed:\n${result.stderr}\n${farm.diagnostics()}`);
      const { derivations } = await farm.api<{ derivations: Array<{ name: string; drvPath: string; timings?: { copyInMs: number; copyOutMs: number } }> }>(
        `/api/runs/${runIdOf(result.stderr)}/derivations`,
      );
      const bigDrv = derivations.find((d) => d.name.startsWith('closure-big-'));
      const big = bigDrv?.timings;
      const use = derivations.find((d) => d.name.startsWith('closure-use-'))?.timings;
      if (bigDrv !== undefined) narBytes = await narSize(bigDrv.drvPath);
      if (big === undefined || use === undefined) throw new Error(`no copy timings: ${JSON.stringify(derivations)}`);
      const row: SlowLinkRow = {
        compression: mode,
        copyOutMs: big.copyOutMs,
        copyInMs: use.copyInMs,
        wireOutBytes: producer.bytes.up - before.up,
        wireInBytes: consumer.bytes.down - before.down,
      };
      rows.push(row);
      say(
        `closure-slow-link: --copy-compression ${mode}: copy out ${(row.copyOutMs / 1000).toFixed(2)} s (${(row.wireOutBytes / MIB).toFixed(1)} MiB on the wire), copy in ${(row.copyInMs / 1000).toFixed(2)} s (${(row.wireInBytes / MIB).toFixed(1)} MiB)`,
      );
    }
  } finally {
    await farm.stop();
  }
  return { mebibytes, bytesPerSecond: RATE, narBytes, rows };
}

/** The NAR size of a derivation's output in the host store (the coordinator's). */
async function narSize(drvPath: string): Promise<number> {
  const out = (await runTimed('nix-store', ['-q', '--outputs', drvPath], { timeoutMs: 30_000 })).stdout.trim();
  return Number((await runTimed('nix-store', ['-q', '--size', out], { timeoutMs: 30_000 })).stdout.trim());
}

export function formatSlowLinkReport(r: SlowLinkBenchReport): string {
  const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
  const m = (bytes: number): string => `${(bytes / MIB).toFixed(1)} MiB`;
  const none = r.rows.find((row) => row.compression === 'none');
  const zlib = r.rows.find((row) => row.compression === 'zlib');
  return benchSection(
    `\na compressible ${r.mebibytes} MiB output (NAR ${m(r.narBytes)}) out and in through a link of ${(r.bytesPerSecond * 8) / 1e6} Mbit/s each way (the test relay), once per --copy-compression:`,
    ['--copy-compression', 'copy out', 'on the wire', 'copy in', 'on the wire'],
    r.rows.map((row) => [row.compression, s(row.copyOutMs), m(row.wireOutBytes), s(row.copyInMs), m(row.wireInBytes)]),
    none === undefined || zlib === undefined
      ? []
      : [
          {
            goal: 'compression makes both copies faster on the slow link',
            measured: `out ${s(zlib.copyOutMs)} against ${s(none.copyOutMs)}, in ${s(zlib.copyInMs)} against ${s(none.copyInMs)}`,
            met: zlib.copyOutMs < none.copyOutMs && zlib.copyInMs < none.copyInMs,
          },
        ],
  );
}
