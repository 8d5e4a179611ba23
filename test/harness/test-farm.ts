import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DerivationView, WorkerListing } from '@nixfarm/shared';
import { SimulatedMachine } from './simulated-machine.js';
import { startPrivateRedis, type PrivateRedis } from './private-redis.js';
import { killGroup, onProcessExit, removeTreeSync } from './process-cleanup.js';
import { TcpProxy } from './tcp-proxy.js';
import { pollFor, sleep } from './poll.js';
import { logOutputTo } from './child-log.js';
import { makeTestCa, type TestCa } from './test-ca.js';

/** The repository root, from test/dist/harness/. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const NIXFARM_BIN = join(REPO_ROOT, 'packages', 'cli', 'bin', 'nixfarm.js');

export interface TestWorkerSpec {
  name: string;
  systems?: string[];
  features?: string[];
  mandatoryFeatures?: string[];
  maxJobs?: number;
  speedFactor?: number;
  /** nix.conf lines for the worker's machine (e.g. `extra-platforms = x86_64-darwin`) */
  nixConfig?: string[];
  /** leave the worker's key out of authorized_keys */
  unauthorised?: boolean;
  /** --lock-seconds: how soon a killed worker's build is re-run elsewhere */
  lockSeconds?: number;
  /** more `nixfarm worker` flags, appended as given */
  extraArgs?: readonly string[];
  /** reach the coordinator's SSH endpoint through a TcpProxy the test can cut (RunningWorker.link) */
  viaProxy?: boolean;
  /** with viaProxy: the link carries at most this many bytes per second each way (a slow line) */
  linkBytesPerSecond?: number;
  /** the machine's /nix is a tmpfs of this size (MiB): a worker with a small disk */
  nixTmpfsMiB?: number;
}

export interface TestFarmOptions {
  workers: TestWorkerSpec[];
  /** --log-level of the coordinator and the workers; default debug (benches use info, as deployed) */
  logLevel?: string;
  /** Redis writes every change to its append-only file, so a restart keeps the farm's state */
  redisAppendOnly?: boolean;
  /** more `nixfarm coordinator` flags for its first start */
  coordinatorArgs?: readonly string[];
  /** Redis speaks only TLS, with certificates of a CA the farm makes (TestFarm.redisTls), and requires client certificates; coordinator and workers connect with rediss:// */
  redisTls?: boolean;
  /**
   * Once Redis runs, before anything connects: make its users (ACL SETUSER) and say which URL the coordinator and
   * the workers use (`--redis`); default both use the unauthenticated default user.
   */
  redisUsers?: (redis: PrivateRedis) => Promise<{ coordinator: string; worker: string }>;
  /** starts the farm's Redis (default: a private redis-server); its url is what the coordinator and, through --join, the workers use */
  redis?: () => Promise<PrivateRedis>;
}

export interface CoordinatorStartOptions {
  /** NIX_CONFIG lines after the farm's own (`substituters =`), e.g. a build-users-group that does not exist */
  nixConfig?: readonly string[];
  /** more `nixfarm coordinator` flags, appended as given */
  extraArgs?: readonly string[];
}

export interface CliOptions {
  timeoutMs?: number;
  cwd?: string;
  /** more environment for the CLI, over the farm's (NIXFARM_COORDINATOR, NIXFARM_TOKEN) */
  env?: Record<string, string>;
}

export interface CommandResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

interface CoordinatorFile {
  pid: number;
  httpUrl: string;
  redisUrl: string;
  sshPort: number;
  hostKey: string;
  /** the signing key's public half (trusted-public-keys form) */
  cacheKey: string;
  /** the binary cache's substituter URL */
  cacheUrl: string;
}

export interface RunningWorker {
  spec: TestWorkerSpec;
  machine: SimulatedMachine;
  process: ChildProcess;
  logFile: string;
  /** the worker's link to the coordinator's store, when started viaProxy */
  link?: TcpProxy;
}

/** Builds run sandboxed, as the brief asks of tests; no substituters are reachable here. */
const WORKER_NIX_OPTIONS = ['sandbox=true', 'substituters='];

/**
 * A whole farm from real parts: a private redis-server, the coordinator (the
 * real `nixfarm coordinator` process, on the host store), and each worker a
 * real `nixfarm worker` process inside its own simulated machine with its own
 * /nix, talking to the coordinator over the real SSH endpoint.
 */
export class TestFarm {
  readonly dir: string;
  readonly coordinatorStateDir: string;
  readonly gcRootsDir: string;
  /** the coordinator's NIX_LOG_DIR: build logs are stored under drvs/ there (`nix-store --read-log` with the same NIX_LOG_DIR reads them) */
  readonly nixLogDir: string;
  redis!: PrivateRedis;
  coordinator!: ChildProcess;
  address!: CoordinatorFile;
  /** the coordinator's admin API token, read from its state dir once it is ready */
  adminToken!: string;
  readonly workers = new Map<string, RunningWorker>();
  private logLevel = 'debug';
  /** the test CA and certificates of a farm started with redisTls */
  redisTls: TestCa | undefined;
  /** the Redis URLs the coordinator and the workers are given, when they are not redis.url (TestFarmOptions.redisUsers) */
  private redisUrls: { coordinator: string; worker: string } | undefined;
  private readonly unregister: () => void;

  private constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'nixfarm-farm-'));
    this.coordinatorStateDir = join(this.dir, 'coordinator');
    this.gcRootsDir = `/nix/var/nix/gcroots/nixfarm-test/${this.dir.split('/').pop()}`;
    this.nixLogDir = join(this.dir, 'nix-log');
    this.unregister = onProcessExit(() => {
      for (const w of this.workers.values()) killGroup(w.process.pid, 'SIGKILL');
      if (this.coordinator) killGroup(this.coordinator.pid, 'SIGKILL');
      removeTreeSync(this.dir);
    });
  }

  static async start(options: TestFarmOptions): Promise<TestFarm> {
    const farm = new TestFarm();
    farm.logLevel = options.logLevel ?? 'debug';
    try {
      farm.redisTls = options.redisTls === true ? await makeTestCa() : undefined;
      const privateRedis = (): Promise<PrivateRedis> =>
        startPrivateRedis({
          appendOnly: options.redisAppendOnly ?? false,
          ...(farm.redisTls === undefined ? {} : { tls: { ca: farm.redisTls } }),
        });
      farm.redis = await (options.redis ?? privateRedis)();
      farm.redisUrls = await options.redisUsers?.(farm.redis);
      await farm.startCoordinator(undefined, options.coordinatorArgs === undefined ? {} : { extraArgs: options.coordinatorArgs });
      for (const spec of options.workers) await farm.startWorker(spec);
      await farm.waitForWorkers(options.workers.filter((w) => !w.unauthorised).map((w) => w.name));
    } catch (error) {
      process.stderr.write(farm.diagnostics());
      await farm.stop();
      throw error;
    }
    return farm;
  }

  private logFile(name: string): string {
    return join(this.dir, `${name}.log`);
  }

  /**
   * The `nixfarm coordinator` arguments (after the bin) and environment this
   * farm starts its coordinator with: for a test that starts one itself (a
   * start that must fail).
   */
  coordinatorCommand(
    ports: { http: number; ssh: number } = { http: 0, ssh: 0 },
    options: CoordinatorStartOptions = {},
  ): { args: string[]; env: NodeJS.ProcessEnv } {
    const args = [
      'coordinator',
      '--state-dir',
      this.coordinatorStateDir,
      '--redis',
      this.redisUrls?.coordinator ?? this.redis.url,
      '--http-port',
      String(ports.http),
      '--ssh-host',
      '127.0.0.1',
      '--ssh-port',
      String(ports.ssh),
      '--gc-roots-dir',
      this.gcRootsDir,
      '--log-level',
      this.logLevel,
      ...(this.redisTls === undefined ? [] : ['--redis-ca', this.redisTls.caCert, ...this.redisClientCertArgs()]),
      ...(options.extraArgs ?? []),
    ];
    const env = { ...process.env, NIX_CONFIG: ['substituters =', ...(options.nixConfig ?? [])].join('\n'), NIX_LOG_DIR: this.nixLogDir };
    return { args, env };
  }

  /** --redis-cert and --redis-key of a client certificate, when Redis speaks TLS */
  private redisClientCertArgs(): string[] {
    return this.redisTls === undefined ? [] : ['--redis-cert', this.redisTls.client.cert, '--redis-key', this.redisTls.client.key];
  }

  /** The ports the coordinator listens on now: a restart on them keeps clients and workers connected. */
  coordinatorPorts(): { http: number; ssh: number } {
    return { http: Number(new URL(this.address.httpUrl).port), ssh: this.address.sshPort };
  }

  /** Starts the coordinator; on ports of an earlier start when given (a restart: clients and workers keep their addresses). */
  async startCoordinator(ports: { http: number; ssh: number } = { http: 0, ssh: 0 }, options: CoordinatorStartOptions = {}): Promise<void> {
    const { args, env } = this.coordinatorCommand(ports, options);
    const child = spawn(process.execPath, [NIXFARM_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env });
    logOutputTo(child, this.logFile('coordinator'));
    this.coordinator = child;
    const file = join(this.coordinatorStateDir, 'coordinator.json');
    const deadline = Date.now() + 30_000;
    // A restart finds the file of the previous life until the new process rewrites it.
    while (!existsSync(file) || (JSON.parse(readFileSync(file, 'utf8')) as CoordinatorFile).pid !== child.pid) {
      if (child.exitCode !== null) throw new Error(`coordinator exited with ${child.exitCode}:\n${this.tail('coordinator')}`);
      if (Date.now() > deadline) throw new Error(`coordinator not ready after 30 s:\n${this.tail('coordinator')}`);
      await sleep(50);
    }
    this.address = JSON.parse(readFileSync(file, 'utf8')) as CoordinatorFile;
    this.adminToken = this.apiToken('admin');
  }

  /** One of the coordinator's API tokens, as its state dir holds it. */
  apiToken(scope: 'read' | 'admin'): string {
    return readFileSync(join(this.coordinatorStateDir, `api-token-${scope}`), 'utf8').trim();
  }

  /** The Authorization header the API needs, for tests that call fetch() themselves. */
  authHeaders(scope: 'read' | 'admin' = 'admin'): Record<string, string> {
    return { authorization: `Bearer ${scope === 'admin' ? this.adminToken : this.apiToken(scope)}` };
  }

  async startWorker(spec: TestWorkerSpec): Promise<RunningWorker> {
    mkdirSync(join(this.dir, 'machines'), { recursive: true });
    // Simulated machines share the host's uids: Nix's build users (nixbld1..) would be picked by several
    // stores at once, and one store's cleanup kills the other's builder (killUser). Real machines have their own.
    const machine = new SimulatedMachine(spec.name, {
      root: join(this.dir, 'machines'),
      nixConfig: ['build-users-group =', ...(spec.nixConfig ?? [])],
      ...(spec.nixTmpfsMiB === undefined ? {} : { nixTmpfsMiB: spec.nixTmpfsMiB }),
    });
    const workerState = join(machine.stateDir, 'worker');
    if (!spec.unauthorised) {
      const key = await this.cli(['worker-key', '--state-dir', workerState]);
      if (key.exitCode !== 0) throw new Error(`worker-key failed: ${key.stderr}`);
      const auth = await this.cli(['authorize', '--state-dir', this.coordinatorStateDir, key.stdout.trim()]);
      if (auth.exitCode !== 0) throw new Error(`authorize failed: ${auth.stderr}`);
    }
    const link = spec.viaProxy ? await TcpProxy.start({ targetPort: this.address.sshPort, bytesPerSecond: spec.linkBytesPerSecond }) : undefined;
    const child = this.spawnWorkerProcess(spec, machine, link);
    const worker: RunningWorker = { spec, machine, process: child, logFile: this.logFile(spec.name), ...(link === undefined ? {} : { link }) };
    this.workers.set(spec.name, worker);
    return worker;
  }

  /** The `nixfarm worker` process of a spec on its machine, its output appended to the worker's log. */
  private spawnWorkerProcess(spec: TestWorkerSpec, machine: SimulatedMachine, link: TcpProxy | undefined): ChildProcess {
    const workerState = join(machine.stateDir, 'worker');
    const args = [NIXFARM_BIN, 'worker', '--join', this.coordinatorStateDir, '--name', spec.name, '--state-dir', workerState, '--log-level', this.logLevel];
    for (const system of spec.systems ?? []) args.push('--system', system);
    if (spec.features?.length) args.push('--features', spec.features.join(','));
    if (spec.mandatoryFeatures?.length) args.push('--mandatory-features', spec.mandatoryFeatures.join(','));
    args.push('--max-jobs', String(spec.maxJobs ?? 1), '--speed-factor', String(spec.speedFactor ?? 1));
    if (spec.lockSeconds !== undefined) args.push('--lock-seconds', String(spec.lockSeconds));
    for (const o of WORKER_NIX_OPTIONS) args.push('--nix-option', o);
    // the CA comes with the URL through --join; the client certificate is the worker's own
    args.push(...this.redisClientCertArgs());
    if (this.redisUrls !== undefined) args.push('--redis', this.redisUrls.worker);
    if (link !== undefined) args.push('--coordinator', `127.0.0.1:${link.port}`);
    args.push(...(spec.extraArgs ?? []));
    const child = machine.spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    logOutputTo(child, this.logFile(spec.name));
    return child;
  }

  /** Starts a worker whose process has exited (stopped or killed) again: the same machine, store, key and name. */
  restartWorker(name: string): RunningWorker {
    const old = this.workers.get(name);
    if (old === undefined) throw new Error(`no worker ${name} in this farm`);
    if (old.process.exitCode === null && old.process.signalCode === null) throw new Error(`worker ${name} still runs: stop it first`);
    const worker: RunningWorker = { ...old, process: this.spawnWorkerProcess(old.spec, old.machine, old.link) };
    this.workers.set(name, worker);
    return worker;
  }

  async waitForWorkers(names: string[], timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { workers } = await this.api<{ workers: WorkerListing[] }>('/api/workers');
      const alive = new Set(workers.filter((w) => w.alive).map((w) => w.name));
      if (names.every((n) => alive.has(n))) return;
      for (const n of names) {
        const w = this.workers.get(n);
        if (w && w.process.exitCode !== null) throw new Error(`worker ${n} exited with ${w.process.exitCode}:\n${this.tail(n)}`);
      }
      if (Date.now() > deadline) throw new Error(`workers ${names.join(', ')} not registered after ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  async api<T>(path: string, init?: RequestInit): Promise<T> {
    const response = await fetch(new URL(path, this.address.httpUrl), {
      ...init,
      headers: { ...this.authHeaders(), ...(init?.headers as Record<string, string> | undefined) },
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}: ${text}`);
    return JSON.parse(text) as T;
  }

  /** Runs the real `nixfarm` CLI on the host (the coordinator's machine). */
  cli(args: readonly string[], options: CliOptions = {}): Promise<CommandResult> {
    return this.spawnCli(args, options).result;
  }

  /**
   * `nixfarm build ARGS` in the background, once the coordinator accepted the
   * run: the command, the run id, and a reader of the run's derivations.
   */
  async submitInBackground(args: readonly string[]): Promise<{ build: RunningCommand; runId: string; rows: () => Promise<DerivationView[]> }> {
    const build = this.spawnCli(['build', '--coordinator', this.address.httpUrl, ...args], { timeoutMs: 300_000 });
    const runId = await pollFor(
      () => /run (\w+)/.exec(build.stderrSoFar())?.[1],
      60_000,
      () => `the run to be accepted:\n${build.stderrSoFar()}`,
    );
    const rows = async () => (await this.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`)).derivations;
    return { build, runId, rows };
  }

  /** Like cli(), but gives access to the output while the command still runs. */
  spawnCli(args: readonly string[], options: CliOptions = {}): RunningCommand {
    return spawnNixfarm(args, {
      ...options,
      // The admin token, as an operator on the coordinator's machine would have it; env overrides it (tests of refusals).
      env: {
        ...process.env,
        NIXFARM_COORDINATOR: this.address?.httpUrl ?? '',
        NIXFARM_TOKEN: this.adminToken ?? '',
        NIX_CONFIG: 'substituters =',
        ...options.env,
      },
    });
  }

  /** `nixfarm build` against this farm. */
  build(args: readonly string[], options: CliOptions = {}): Promise<CommandResult> {
    return this.cli(['build', '--coordinator', this.address.httpUrl, ...args], options);
  }

  tail(name: string, lines = 40): string {
    try {
      return readFileSync(this.logFile(name), 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** The log lines of the coordinator and every worker that mention `text` (a derivation's hash, say), for an assertion's message. */
  linesMentioning(text: string, limit = 60): string {
    return ['coordinator', ...this.workers.keys()]
      .map(
        (n) =>
          `--- ${n} ---\n${this.tail(n, Number.MAX_SAFE_INTEGER)
            .split('\n')
            .filter((l) => l.includes(text))
            .slice(-limit)
            .join('\n')}\n`,
      )
      .join('');
  }

  diagnostics(): string {
    return ['coordinator', ...this.workers.keys()].map((n) => `--- ${n} ---\n${this.tail(n)}\n`).join('');
  }

  async stopWorker(name: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const w = this.workers.get(name);
    if (w === undefined || w.process.exitCode !== null) return w?.process.exitCode ?? null;
    const exited = new Promise<number | null>((r) => w.process.once('exit', (code) => r(code)));
    killGroup(w.process.pid, signal);
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<null>((r) => (timer = setTimeout(() => r(null), 15_000)))]);
    clearTimeout(timer);
    if (w.process.exitCode === null) killGroup(w.process.pid, 'SIGKILL');
    return code;
  }

  /**
   * Kills the coordinator (its whole process group, as a crash of its machine
   * or service would) and waits until it is gone; the workers, Redis and the
   * clients stay. restartCoordinator() brings it back on the same ports.
   */
  async killCoordinator(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.coordinator;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    killGroup(child.pid, signal);
    await exited;
  }

  /** Starts the coordinator again with the same state dir, Redis and ports. */
  async restartCoordinator(): Promise<void> {
    const ports = this.coordinatorPorts();
    await this.killCoordinator();
    await this.startCoordinator(ports);
  }

  async stop(): Promise<void> {
    for (const w of this.workers.values()) await w.link?.close();
    for (const name of this.workers.keys()) await this.stopWorker(name);
    for (const w of this.workers.values()) await w.machine.destroy();
    if (this.coordinator && this.coordinator.exitCode === null) {
      const exited = new Promise((r) => this.coordinator.once('exit', r));
      killGroup(this.coordinator.pid, 'SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 10_000)))]);
      clearTimeout(timer);
      if (this.coordinator.exitCode === null) killGroup(this.coordinator.pid, 'SIGKILL');
    }
    await this.redis?.stop();
    await rm(this.gcRootsDir, { recursive: true, force: true });
    this.unregister();
    removeTreeSync(this.dir);
  }
}

export interface RunningCommand {
  result: Promise<CommandResult>;
  stderrSoFar: () => string;
  stdoutSoFar: () => string;
}

/**
 * Runs the real `nixfarm` CLI with exactly this environment (default: the
 * test process's), killed after `timeoutMs` (default 300 s); for commands
 * outside a farm (a start that must fail) as well as TestFarm.spawnCli.
 */
export function spawnNixfarm(args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): RunningCommand {
  let stderrSoFar = '';
  let stdoutSoFar = '';
  const result = new Promise<CommandResult>((resolvePromise, reject) => {
    const child = spawn(process.execPath, [NIXFARM_BIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      env: options.env ?? process.env,
    });
    child.stdout.on('data', (c: Buffer) => (stdoutSoFar += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderrSoFar += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 300_000);
    child.once('error', reject);
    child.once('close', (exitCode) => {
      clearTimeout(timer);
      resolvePromise({ exitCode, stdout: stdoutSoFar, stderr: stderrSoFar });
    });
  });
  return { result, stderrSoFar: () => stderrSoFar, stdoutSoFar: () => stdoutSoFar };
}
