/**
 * Scheduler throughput without Nix (issue 5, point 3): a synthetic DAG fed
 * straight to the coordinator's scheduling core, built by workers that finish
 * every job at once. Measures how many derivations the coordinator releases
 * and completes per second, and its peak RSS. A bench, not a test.
 *
 *   npm run bench:scheduler -- [--size 100000] [--workers 4] [--slots 8] [--layers 40] [--label NAME] [--cpu-prof DIR] [--baseline DIR]
 *
 * --baseline DIR: a built checkout of another commit (e.g. main, made with
 * `git worktree add --detach`): its coordinator process runs the same DAG
 * first, on a fresh redis-server of its own, then this checkout's; both
 * columns are printed side by side. Ratios within one invocation are what
 * compare on a shared machine.
 *
 * What is real: redis-server, the coordinator's SchedulingCore in a process
 * of its own (RunService, DerivationGraph and its Lua, BuildQueues on
 * BullMQ, WorkerEventConsumer and WorkerEventHandler, GC-root symlinks in a
 * temporary directory), the worker registry, the BullMQ jobs, the worker
 * event stream and its schema. What is not: the check that outputs are valid
 * in the coordinator's Nix store, which reports everything valid.
 */
import { fork } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { AuthorizedKeys } from '@nixfarm/coordinator';
import { BULLMQ_PREFIX, ReportSigner, ValidationError, createLogger, loadOrCreateSshKey, redisKeys } from '@nixfarm/shared';
import { startPrivateRedis } from '../harness/private-redis.js';
import { onProcessExit } from '../harness/process-cleanup.js';
import { InstantWorkers } from './scheduler-instant-workers.js';
import { computeRates, type Sample } from './scheduler-rates.js';
import { printComparison, printReport, writeReport, type SchedulerBenchReport } from './scheduler-report.js';
import type { CoordinatorProcessConfig, FromCoordinator, MemoryStage, ToCoordinator } from './scheduler-protocol.js';

const TARGET_PER_SECOND = 3000;
const TARGET_RSS_BYTES = 512 * 1024 ** 2;
const TARGET_FIRST_BUILD_SECONDS = 1;
const SAMPLE_MS = 100;

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..', '..');

const { values: flags } = parseArgs({
  options: {
    size: { type: 'string', default: '100000' },
    workers: { type: 'string', default: '4' },
    slots: { type: 'string', default: '8' },
    layers: { type: 'string', default: '40' },
    seed: { type: 'string', default: '1' },
    label: { type: 'string', default: '' },
    'timeout-seconds': { type: 'string', default: '900' },
    'cpu-prof': { type: 'string' },
    baseline: { type: 'string' },
  },
});

function positiveInt(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, not ${JSON.stringify(value)}`);
  return n;
}

const size = positiveInt('size', flags.size);
const workerCount = positiveInt('workers', flags.workers);
const slots = positiveInt('slots', flags.slots);
const layers = positiveInt('layers', flags.layers);
const seed = positiveInt('seed', flags.seed);
const timeoutMs = positiveInt('timeout-seconds', flags['timeout-seconds']) * 1000;

/** Peak resident set of a process (VmHWM), in bytes. */
function peakRss(pid: number): number {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? Number.NaN : Number(match[1]) * 1024;
}

/** CPU time a process has used (user + system), in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Where Redis spent its time (INFO commandstats; Lua scripts count as evalsha), busiest first. */
function topCommands(info: string): Array<{ command: string; calls: number; seconds: number }> {
  const out: Array<{ command: string; calls: number; seconds: number }> = [];
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) out.push({ command: m[1]!, calls: Number(m[2]), seconds: Number(m[3]) / 1e6 });
  return out.sort((a, b) => b.seconds - a.seconds).slice(0, 12);
}

function chunkPairs(flat: readonly unknown[]): Array<[string, unknown]> {
  const out: Array<[string, unknown]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([String(flat[i]), flat[i + 1]]);
  return out;
}

function gitCommit(dir: string): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: dir, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/** BullMQ's key prefix a checkout's coordinator uses: ours, or BullMQ's default for a baseline from before it had one. */
function bullmqPrefixOf(checkout: string): string {
  const keys = path.join(checkout, 'packages', 'shared', 'dist', 'redis-keys.js');
  return readFileSync(keys, 'utf8').includes('BULLMQ_PREFIX') ? BULLMQ_PREFIX : 'bull';
}

/** One checkout's coordinator process on the DAG, with a redis-server and instant workers of its own. */
async function measure(label: string, checkout: string): Promise<SchedulerBenchReport> {
  const logger = createLogger({ name: 'bench-workers', level: 'warn' });
  const redisServer = await startPrivateRedis({});
  const gcRootsDir = mkdtempSync(path.join(os.tmpdir(), 'nixfarm-bench-roots-'));
  const unregister = onProcessExit(() => rmSync(gcRootsDir, { recursive: true, force: true }));
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  // The workers' reports are signed, as real workers' are: one key, authorised in the coordinator's state dir.
  const stateDir = path.join(gcRootsDir, 'state');
  const key = await loadOrCreateSshKey(path.join(stateDir, 'worker-key'), 'bench-workers', (file, reason) => new ValidationError(`${file}: ${reason}`));
  await new AuthorizedKeys(stateDir).add(key.publicKeyLine);
  const bullmqPrefix = bullmqPrefixOf(checkout);
  const workers = new InstantWorkers({
    redisUrl: redisServer.url,
    count: workerCount,
    slots,
    logger,
    signer: ReportSigner.fromPrivateKey(key.privateKey),
    bullmqPrefix,
  });
  const config: CoordinatorProcessConfig = { redisUrl: redisServer.url, gcRootsDir, stateDir, size, layers, seed };
  const profileDir = flags['cpu-prof'] === undefined ? undefined : path.resolve(flags['cpu-prof']);
  if (profileDir !== undefined) mkdirSync(profileDir, { recursive: true });
  const execArgv = ['--expose-gc', ...(profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir])];
  const child = fork(path.join(checkout, 'test', 'dist', 'bench', 'scheduler-coordinator-process.js'), [JSON.stringify(config)], {
    execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const inbox: FromCoordinator[] = [];
  const memoryStages: MemoryStage[] = [];
  let waiter: (() => void) | undefined;
  child.on('message', (m: FromCoordinator) => {
    if (m.type === 'memory') {
      memoryStages.push(m.stage);
      return;
    }
    inbox.push(m);
    waiter?.();
  });
  child.on('exit', () => waiter?.());
  const receive = async <T extends FromCoordinator['type']>(type: T): Promise<Extract<FromCoordinator, { type: T }>> => {
    for (;;) {
      const failed = inbox.find((m) => m.type === 'failed');
      if (failed !== undefined && failed.type === 'failed') throw new Error(`coordinator process failed:\n${failed.error}`);
      const index = inbox.findIndex((m) => m.type === type);
      if (index >= 0) return inbox.splice(index, 1)[0] as Extract<FromCoordinator, { type: T }>;
      if (child.exitCode !== null) throw new Error(`coordinator process exited with ${child.exitCode} while the bench waited for '${type}'`);
      await new Promise<void>((resolve) => (waiter = resolve));
    }
  };
  const tell = (message: ToCoordinator) => child.send(message);

  try {
    const ready = await receive('ready');
    // Capable workers are registered before the run, or the coordinator would call every build unsupported.
    await workers.start();
    process.stderr.write(`scheduler bench: ${ready.nodes} derivations, ${ready.edges} edges, ${workerCount} instant workers x ${slots} slots; running...\n`);

    const queues = new Map<string, Queue>();
    const waiting = async (): Promise<number> => {
      for (const name of await redis.smembers(redisKeys.queues))
        if (!queues.has(name)) queues.set(name, new Queue(name, { connection: redis, prefix: bullmqPrefix }));
      let sum = 0;
      for (const q of queues.values()) for (const n of Object.values(await q.getJobCounts('waiting', 'prioritized', 'delayed'))) sum += n;
      return sum;
    };

    // Reports in the worker-event stream that the coordinator has not acknowledged yet: its backlog.
    const unappliedReports = async (): Promise<number> => {
      const groups = (await redis.xinfo('GROUPS', redisKeys.workerEvents).catch(() => [])) as unknown[][];
      const group = groups.map((g) => Object.fromEntries(chunkPairs(g))).find((g) => g.name === redisKeys.workerEventsGroup);
      return group === undefined ? 0 : Number(group.lag ?? 0) + Number(group.pending ?? 0);
    };

    const samples: Sample[] = [];
    const cpuAtStart = { coordinator: cpuSeconds(child.pid!), redis: cpuSeconds(redisServer.pid!), workers: process.cpuUsage() };
    const t0 = performance.now();
    tell({ type: 'submit' });
    let submitted: Extract<FromCoordinator, { type: 'submitted' }> | undefined;
    let runId: string | undefined;
    let finishedStatus: string | undefined;
    void receive('submitted').then(
      (m) => {
        submitted = m;
        runId = m.runId;
      },
      () => undefined,
    );
    for (;;) {
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
      const t = (performance.now() - t0) / 1000;
      const failed = inbox.find((m) => m.type === 'failed');
      if (failed !== undefined && failed.type === 'failed') throw new Error(`coordinator process failed:\n${failed.error}`);
      let completed = 0;
      if (runId !== undefined) {
        const [status, remaining, total] = await redis.hmget(redisKeys.run(runId), 'status', 'remaining', 'total');
        completed = Math.max(0, Number(total) - Number(remaining));
        if (status !== 'running') {
          finishedStatus = status ?? 'missing';
          completed = Number(total);
        }
      }
      const queued = await waiting();
      samples.push({ t, released: workers.taken + queued, completed, queued, unapplied: await unappliedReports() });
      if (finishedStatus !== undefined) break;
      // Reported, not thrown: how far a slow scheduler got is the result.
      if (t * 1000 > timeoutMs) {
        finishedStatus = `unfinished after ${timeoutMs / 1000} s (${completed} completed)`;
        break;
      }
    }
    const wallSeconds = samples.at(-1)!.t;
    const coordinatorPeakRssBytes = peakRss(child.pid!);
    // The memory stages of the run; a coordinator process of an older checkout does not answer.
    tell({ type: 'memory' });
    await Promise.race([receive('memory-done'), new Promise((r) => setTimeout(r, 3000))]);
    const workersCpu = process.cpuUsage(cpuAtStart.workers);
    const cpu = {
      coordinatorSeconds: cpuSeconds(child.pid!) - cpuAtStart.coordinator,
      redisSeconds: cpuSeconds(redisServer.pid!) - cpuAtStart.redis,
      benchWorkersSeconds: (workersCpu.user + workersCpu.system) / 1e6,
    };
    const memory = await redis.info('memory');
    const redisCommands = topCommands(await redis.info('commandstats'));
    const redisField = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(memory)?.[1] ?? Number.NaN);
    const rates = computeRates(samples, size);
    const firstBuildSeconds = ((workers.firstTakenAt ?? Number.NaN) - t0) / 1000;
    const report: SchedulerBenchReport = {
      label,
      commit: gitCommit(checkout),
      at: new Date().toISOString(),
      machine: { cpus: os.cpus().length, node: process.version },
      size,
      edges: ready.edges,
      workers: workerCount,
      slotsPerWorker: slots,
      runStatus: finishedStatus!,
      dagSeconds: ready.dagMs / 1000,
      submitSeconds: (submitted?.submitMs ?? Number.NaN) / 1000,
      firstBuildSeconds,
      wallSeconds,
      ...rates,
      coordinatorPeakRssBytes,
      cpu,
      redisCommands,
      redisUsedMemoryBytes: redisField('used_memory'),
      redisPeakMemoryBytes: redisField('used_memory_peak'),
      memoryStages,
      targets: {
        perSecond: TARGET_PER_SECOND,
        rssBytes: TARGET_RSS_BYTES,
        firstBuildSeconds: TARGET_FIRST_BUILD_SECONDS,
        throughputMet: rates.releasedPerSecond >= TARGET_PER_SECOND && rates.completedPerSecond >= TARGET_PER_SECOND,
        rssMet: coordinatorPeakRssBytes <= TARGET_RSS_BYTES,
        firstBuildMet: firstBuildSeconds <= TARGET_FIRST_BUILD_SECONDS,
      },
      samples,
    };
    return report;
  } finally {
    await workers.stop().catch(() => undefined);
    if (child.exitCode === null && child.signalCode === null) {
      tell({ type: 'stop' });
      // Waits for the exit itself: --cpu-prof writes the profile on the way out.
      const exited = new Promise((resolve) => child.once('exit', resolve));
      if (child.exitCode === null) await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    redis.disconnect();
    await redisServer.stop();
    rmSync(gcRootsDir, { recursive: true, force: true });
    unregister();
  }
}

async function main(): Promise<number> {
  const checkouts: Array<{ label: string; dir: string }> = [];
  if (flags.baseline !== undefined) checkouts.push({ label: 'baseline', dir: path.resolve(flags.baseline) });
  checkouts.push({ label: flags.label || (flags.baseline === undefined ? '' : 'this checkout'), dir: repoRoot });
  for (const { dir } of checkouts) {
    const script = path.join(dir, 'test', 'dist', 'bench', 'scheduler-coordinator-process.js');
    if (!existsSync(script)) throw new Error(`${script} does not exist: build that checkout first (npm run build in ${dir})`);
  }
  const reports: SchedulerBenchReport[] = [];
  for (const { label, dir } of checkouts) {
    process.stderr.write(`scheduler bench: ${label || 'this checkout'} (${dir})\n`);
    reports.push(await measure(label, dir));
  }
  const mine = reports.at(-1)!;
  if (reports.length === 1) printReport(mine);
  else printComparison(reports);
  const file = await writeReport(mine, path.join(repoRoot, 'bench', 'results'), reports.length > 1 ? reports[0] : undefined);
  process.stdout.write(`\nwritten: ${path.relative(repoRoot, file)} (and bench/results/scheduler-latest.json)\n`);
  return mine.runStatus === 'succeeded' && mine.targets.throughputMet && mine.targets.rssMet && mine.targets.firstBuildMet ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`scheduler bench failed: ${String((error as Error).stack ?? error)}\n`);
    process.exit(2);
  },
);
