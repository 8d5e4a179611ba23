import { WAY_IDS, type WayId } from './bench-way.js';
import { WORKLOAD_IDS, type WorkloadId } from './workloads.js';

export interface BenchOptions {
  reps: number;
  workloads: WorkloadId[];
  ways: WayId[];
  /** J: max-jobs per worker machine; local nix-build gets 2 * J */
  maxJobs: number;
  quick: boolean;
  /** before each run, wait up to this many seconds for other processes to leave the CPU (0: do not wait) */
  waitIdleSeconds: number;
  /** run the jobset part (jobset-bench.ts): `--only jobset-2000` */
  jobset: boolean;
  /** run the reproducibility-check part (check-bench.ts) on these workloads: `--only check-overhead` (dag-50 and cpu-40) */
  checkOverhead: boolean;
  /** run the big-closure part (closure-bench.ts): `--only closure-1g` */
  closure: boolean;
  /** run the slow-link part (slow-link-bench.ts): `--only closure-slow-link` */
  slowLink: boolean;
  /** run the scale-out part (scale-bench.ts): `--only scale-out` */
  scaleOut: boolean;
  /** its repetitions: 1 unless --reps is given (one full run takes about 10 min) */
  scaleReps: number;
}

/** The jobset part is no workload of the ways' matrix: it measures evaluation too (jobset-bench.ts). */
const JOBSET = 'jobset-2000';
/** Nor is the check part: the same workloads with and without background checks (check-bench.ts). */
const CHECK_OVERHEAD = 'check-overhead';
/** Nor the big closure: one 1 GiB output's copies against Nix's export/import pipe (closure-bench.ts). */
const CLOSURE = 'closure-1g';
/** Nor the slow link: a compressible output's copies through a 100 Mbit/s relay, with and without --copy-compression (slow-link-bench.ts). */
const SLOW_LINK = 'closure-slow-link';
/** Nor is the scale-out part: one DAG of sleeping builds on 2, 8 and 20 workers (scale-bench.ts). */
const SCALE_OUT = 'scale-out';
const ONLY_IDS = [...WORKLOAD_IDS, JOBSET, CHECK_OVERHEAD, SCALE_OUT, CLOSURE, SLOW_LINK] as const;

const USAGE = `usage: npm run bench -- [--reps N] [--only ${ONLY_IDS.join(',')}] [--ways a,b,c] [--max-jobs J] [--quick]
  --reps N        repetitions per workload and way (default 3; 1 with --quick); figures are medians
  --only LIST     workloads to run (default all); jobset-2000: evaluation and streaming of a 2,000-attribute jobset (ways a and c);
                  check-overhead: a run's time with every build checked on another worker (--check-fraction 1) against without;
                  closure-1g: a 1 GiB output copied out and in, against nix-store --export | nix-store --import and nix-build --builders (--quick: 64 MiB);
                  closure-slow-link: a compressible 256 MiB output copied out and in over a 100 Mbit/s link, --copy-compression none and zlib (--quick: 16 MiB);
                  scale-out: 2,001 builds of 1 s sleeps on 2, 8 and 20 workers (4 jobs each) against the ideal bound (1 rep unless --reps)
  --ways LIST     a = local nix-build -j(2J), b = nix-build -j0 --builders over SSH, c = nixfarm (default a,b,c)
  --max-jobs J    jobs per worker machine (default 2)
  --quick         small sizes for a smoke run (scale-out: 41 builds on 2 and 4 workers)
  --wait-idle S   before each run, wait up to S seconds until processes outside the bench use < 0.25 cores (default 0)`;

function positiveInteger(flag: string, value: string | undefined): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a whole number >= 1, not ${value ?? 'nothing'}`);
  return n;
}

function list<T extends string>(flag: string, value: string | undefined, allowed: readonly T[]): T[] {
  if (value === undefined || value === '') throw new Error(`${flag} needs a comma-separated list of ${allowed.join(', ')}`);
  const items = value.split(',').map((s) => s.trim());
  for (const item of items)
    if (!(allowed as readonly string[]).includes(item)) throw new Error(`${flag}: unknown ${JSON.stringify(item)} (one of ${allowed.join(', ')})`);
  // in the canonical order, each once
  return allowed.filter((a) => items.includes(a));
}

export function parseBenchOptions(argv: readonly string[]): BenchOptions {
  let reps: number | undefined;
  let only: string[] = [...ONLY_IDS];
  let ways = [...WAY_IDS];
  let maxJobs = 2;
  let quick = false;
  let waitIdleSeconds = 0;
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const [name, inline] = flag.includes('=') ? [flag.slice(0, flag.indexOf('=')), flag.slice(flag.indexOf('=') + 1)] : [flag, undefined];
    const value = (): string | undefined => inline ?? argv[++i];
    switch (name) {
      case '--reps':
        reps = positiveInteger(name, value());
        break;
      case '--only':
        only = list(name, value(), ONLY_IDS);
        break;
      case '--ways':
        ways = list(name, value(), WAY_IDS);
        break;
      case '--max-jobs':
        maxJobs = positiveInteger(name, value());
        break;
      case '--wait-idle':
        waitIdleSeconds = positiveInteger(name, value());
        break;
      case '--quick':
        quick = true;
        break;
      case '--help':
      case '-h':
        process.stdout.write(`${USAGE}\n`);
        return process.exit(0);
      default:
        throw new Error(`unknown argument ${JSON.stringify(flag)}\n${USAGE}`);
    }
  }
  const workloads = WORKLOAD_IDS.filter((w) => only.includes(w));
  return {
    reps: reps ?? (quick ? 1 : 3),
    workloads,
    ways,
    maxJobs,
    quick,
    waitIdleSeconds,
    jobset: only.includes(JOBSET),
    checkOverhead: only.includes(CHECK_OVERHEAD),
    closure: only.includes(CLOSURE),
    slowLink: only.includes(SLOW_LINK),
    scaleOut: only.includes(SCALE_OUT),
    scaleReps: reps ?? 1,
  };
}
