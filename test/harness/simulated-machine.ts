import { execFileSync, spawn, spawnSync, type ChildProcess, type SpawnOptions, type StdioOptions } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmdirSync } from 'node:fs';
import { basename, dirname, join, posix, relative } from 'node:path';
import { assertDerivationPath, assertStorePath, STORE_DIR } from '@nixfarm/shared';
import { isAlive, killGroup, onProcessExit, removeTreeSync, withParentDeathSignal } from './process-cleanup.js';
import { sleep } from './poll.js';

export interface SimulatedMachineOptions {
  /** parent dir; by default one /tmp/nixfarm-test-XXXXXX per test process, shared by its machines */
  root?: string;
  /** nix.conf lines for every process of this machine, after `substituters =` (e.g. `extra-platforms = x86_64-darwin`) */
  nixConfig?: readonly string[];
  /** the machine's /nix is a tmpfs of this many MiB (mounted from the host, so a test can fill it): a machine with a small disk */
  nixTmpfsMiB?: number;
}

export interface MachineSpawnOptions {
  /** added to (and overriding) the test process's environment */
  env?: NodeJS.ProcessEnv;
  /** nix.conf lines for this process only, after the machine's */
  nixConfig?: readonly string[];
  cwd?: string;
  /** default: ['ignore', 'pipe', 'pipe'] */
  stdio?: StdioOptions;
}

export interface RunResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface MachineRunOptions extends Omit<MachineSpawnOptions, 'stdio'> {
  /** written to the process's stdin, then stdin is closed */
  input?: string | Buffer;
  /** kill the process group after this long (ms); default 120 s */
  timeoutMs?: number;
}

/**
 * Environment variables that would point Nix elsewhere than this machine's
 * /nix (a daemon socket, another store or state dir). Dropped from the
 * inherited environment so that a machine only ever sees its own store.
 */
const FOREIGN_NIX_VARS = ['NIX_REMOTE', 'NIX_STORE_DIR', 'NIX_STATE_DIR', 'NIX_LOG_DIR', 'NIX_CONF_DIR', 'NIX_USER_CONF_FILES', 'NIX_CONFIG', 'NIX_PATH'];

/**
 * The fixed script that enters a machine: $0 is the machine's nix dir, "$@"
 * the command and its arguments. Data only ever travels as positional
 * arguments, never inside the script text.
 */
const ENTER_SCRIPT = 'mount --bind "$0" /nix && exec "$@"';

let defaultRoot: string | undefined;

function processRoot(): string {
  if (defaultRoot === undefined) {
    const root = mkdtempSync('/tmp/nixfarm-test-');
    defaultRoot = root;
    onProcessExit(() => {
      if (process.env.NIXFARM_KEEP_TEST_DIRS === '1') return;
      try {
        rmdirSync(root); // only when every machine was destroyed; a leftover machine's exit hook removes itself first
      } catch {
        removeTreeSync(root);
      }
    });
  }
  return defaultRoot;
}

/**
 * One machine of a simulated farm: a private mount namespace per process
 * with the machine's own directory bind-mounted on /nix, so that everything
 * started through spawn() (a worker, an sshd, nix-store) sees only this
 * machine's store. The host filesystem is otherwise shared (e.g. /tmp, the
 * repo), which is what lets tests hand files to it.
 *
 * Layout: <root>/<name>/{nix,home,state}. Nix initialises nix/ on first use.
 */
export class SimulatedMachine {
  readonly name: string;
  readonly dir: string;
  /** bind-mounted on /nix inside the machine */
  readonly nixDir: string;
  /** HOME inside the machine (ssh keys, ~/.cache) */
  readonly homeDir: string;
  /** free for the test: a worker's stateDir, config files, keys */
  readonly stateDir: string;
  private readonly nixConfig: readonly string[];
  /** nixDir is a tmpfs we mounted (unmounted on destroy) */
  private readonly ownMount: boolean;
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;
  /** how nixDir appears in other processes' mount tables; computed while it exists */
  private readonly identity: { device: string; root: string };
  private readonly unregister: () => void;

  constructor(name: string, options: SimulatedMachineOptions = {}) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw new Error(`machine name ${JSON.stringify(name)}: use letters, digits and _ . -`);
    this.name = name;
    this.dir = join(options.root ?? processRoot(), name);
    this.nixDir = join(this.dir, 'nix');
    this.homeDir = join(this.dir, 'home');
    this.stateDir = join(this.dir, 'state');
    this.nixConfig = options.nixConfig ?? [];
    mkdirSync(dirname(this.dir), { recursive: true });
    // recursive: false on the machine dir itself so that two machines cannot share a name by accident
    mkdirSync(this.dir, { recursive: false });
    for (const d of [this.nixDir, this.homeDir, this.stateDir]) mkdirSync(d, { recursive: true });
    // Before anything uses the dir, and before its mount identity is read: processes inside bind-mount the tmpfs.
    this.ownMount = options.nixTmpfsMiB !== undefined;
    if (options.nixTmpfsMiB !== undefined) {
      if (!Number.isInteger(options.nixTmpfsMiB) || options.nixTmpfsMiB < 1)
        throw new Error(`nixTmpfsMiB must be a positive integer, not ${options.nixTmpfsMiB}`);
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${options.nixTmpfsMiB}m,mode=0755`, `nixfarm-${name}`, this.nixDir], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
    }
    this.identity = this.mountIdentity();
    this.unregister = onProcessExit(() => this.destroySync());
  }

  /** The NIX_CONFIG text a process of this machine gets. */
  nixConfigText(extra: readonly string[] = []): string {
    return ['substituters =', ...this.nixConfig, ...extra].join('\n');
  }

  /** The environment a process of this machine gets (without entering the namespace). */
  environment(options: Pick<MachineSpawnOptions, 'env' | 'nixConfig'> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const name of FOREIGN_NIX_VARS) delete env[name];
    const callerConfig = options.env?.NIX_CONFIG;
    return {
      ...env,
      HOME: this.homeDir,
      XDG_CACHE_HOME: join(this.homeDir, '.cache'),
      ...options.env,
      NIX_CONFIG: this.nixConfigText([...(options.nixConfig ?? []), ...(callerConfig === undefined ? [] : [callerConfig])]),
    };
  }

  /**
   * Starts a process inside this machine. It runs in its own process group
   * (killed as a whole by destroy()) and dies with the test process.
   */
  spawn(command: string, args: readonly string[] = [], options: MachineSpawnOptions = {}): ChildProcess {
    const wrapped = this.commandLine(command, args);
    const spawnOptions: SpawnOptions = {
      env: this.environment(options),
      stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'],
      detached: true,
    };
    if (options.cwd !== undefined) spawnOptions.cwd = options.cwd;
    const child = spawn(wrapped.command, wrapped.args, spawnOptions);
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    return child;
  }

  /** The command line that runs `command` inside this machine, for code that spawns processes itself (run it with environment()). */
  commandLine(command: string, args: readonly string[] = []): { command: string; args: string[] } {
    if (this.destroyed) throw new Error(`machine ${this.name} was destroyed`);
    const inner = ['-m', '--propagation', 'private', 'sh', '-c', ENTER_SCRIPT, this.nixDir, command, ...args];
    return withParentDeathSignal('unshare', inner);
  }

  /** Runs a command inside this machine to completion, collecting its output. Never rejects on a non-zero exit. */
  run(command: string, args: readonly string[] = [], options: MachineRunOptions = {}): Promise<RunResult> {
    const child = this.spawn(command, args, { ...options, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => stdout.push(c));
    child.stderr?.on('data', (c: Buffer) => stderr.push(c));
    if (options.input !== undefined) child.stdin?.end(options.input);
    const timeoutMs = options.timeoutMs ?? 120_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), timeoutMs);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('close', (exitCode, signal) => {
        clearTimeout(timer);
        resolve({ exitCode, signal, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() });
      });
    });
  }

  /** Like run(), but rejects with the stderr when the command fails. */
  async runChecked(command: string, args: readonly string[] = [], options: MachineRunOptions = {}): Promise<string> {
    const result = await this.run(command, args, options);
    if (result.exitCode !== 0) {
      throw new Error(`[${this.name}] ${command} ${args.join(' ')} exited with ${result.exitCode ?? result.signal}:\n${result.stderr}`);
    }
    return result.stdout;
  }

  /** Which of these store paths are valid in this machine's store. */
  async isValid(paths: readonly string[]): Promise<Set<string>> {
    if (paths.length === 0) return new Set();
    for (const p of paths) assertStorePath(p);
    const result = await this.run('nix-store', ['--check-validity', '--print-invalid', ...paths]);
    if (result.exitCode !== 0) throw new Error(`[${this.name}] nix-store --check-validity failed (${result.exitCode}):\n${result.stderr}`);
    const invalid = new Set(result.stdout.split('\n').filter((l) => l.length > 0));
    return new Set(paths.filter((p) => !invalid.has(p)));
  }

  /**
   * Where Nix 2.8 keeps the build log of a derivation built on this machine:
   * nix/var/log/nix/drvs/<first 2 chars of the drv's basename>/<the rest>.bz2,
   * e.g. drvs/r7/5rm2fprg4sbifh21gza9j1943fja99-a.drv.bz2 (bzip2-compressed).
   */
  logPathFor(drvPath: string): string {
    assertDerivationPath(drvPath);
    const base = basename(drvPath);
    return join(this.nixDir, 'var', 'log', 'nix', 'drvs', base.slice(0, 2), `${base.slice(2)}.bz2`);
  }

  /** The decompressed build log, as Nix itself reads it; undefined if this machine has none. */
  async readLog(drvPath: string): Promise<string | undefined> {
    assertDerivationPath(drvPath);
    const result = await this.run('nix-store', ['--read-log', drvPath]);
    return result.exitCode === 0 ? result.stdout : undefined;
  }

  /** Host-side path of a store object of this machine (for reading outputs without entering it). */
  hostPathOf(storePath: string): string {
    assertStorePath(storePath);
    return join(this.nixDir, 'store', storePath.slice(STORE_DIR.length + 1));
  }

  /**
   * Pids of every process, spawned by us or not, that has this machine's nix
   * dir mounted: its bind mount shows in /proc/<pid>/mountinfo with the
   * device of the filesystem holding the dir and, as the mount's root, the
   * dir's path within that filesystem.
   */
  processesInside(): number[] {
    const { device, root } = this.identity;
    const pids: number[] = [];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      if (pid === process.pid) continue;
      let mountinfo: string;
      try {
        mountinfo = readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
      } catch {
        continue;
      }
      for (const line of mountinfo.split('\n')) {
        const fields = line.split(' ');
        const mountRoot = fields[3];
        if (fields[2] === device && mountRoot !== undefined && (mountRoot === root || mountRoot.startsWith(`${root}/`)) && this.seenFromInside(fields[4])) {
          pids.push(pid);
          break;
        }
      }
    }
    return pids;
  }

  /**
   * Whether a mount of this machine's nix dir is how a process inside sees it:
   * on /nix (or below, or as the root of a sandboxed builder). Needed for a
   * tmpfs of our own: every process on the host, and in namespaces made since
   * it was mounted, also has it in its table, at the host path, and must
   * never be taken for one inside.
   */
  private seenFromInside(mountPoint: string | undefined): boolean {
    if (!this.ownMount) return true;
    return mountPoint === '/nix' || mountPoint?.startsWith('/nix/') === true || mountPoint === '/';
  }

  /** Device (major:minor) and filesystem-relative path of nixDir, from our own mount table. */
  private mountIdentity(): { device: string; root: string } {
    const nixDir = realpathSync(this.nixDir);
    let best: { mountPoint: string; root: string; device: string } | undefined;
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const [, , device, root, mountPoint] = line.split(' ');
      if (device === undefined || root === undefined || mountPoint === undefined) continue;
      const inside = mountPoint === '/' || nixDir === mountPoint || nixDir.startsWith(`${mountPoint}/`);
      // the last of equally long matches is the one on top
      if (inside && (best === undefined || mountPoint.length >= best.mountPoint.length)) best = { mountPoint, root, device };
    }
    if (best === undefined) throw new Error(`no mount holds ${nixDir}`);
    const rel = relative(best.mountPoint, nixDir);
    return { device: best.device, root: rel === '' ? best.root : posix.join(best.root, rel) };
  }

  private killEverything(): void {
    for (const child of this.children) killGroup(child.pid, 'SIGKILL');
    // Processes that left our process groups (setsid: Nix builders without
    // sandbox, sshd sessions) still live in the mount namespace.
    for (const pid of this.processesInside()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.killEverything();
    // Lazy: a process that is still dying may hold it for a moment; the tmpfs goes with its last user.
    if (this.ownMount) spawnSync('umount', ['--lazy', this.nixDir], { stdio: 'ignore' });
    if (process.env.NIXFARM_KEEP_TEST_DIRS !== '1') removeTreeSync(this.dir);
  }

  /**
   * Stops every process of this machine (SIGTERM to their groups, SIGKILL to
   * what is left after graceMs) and deletes its directory.
   */
  async destroy(options: { graceMs?: number } = {}): Promise<void> {
    if (this.destroyed) return;
    const graceMs = options.graceMs ?? 2000;
    const children = [...this.children];
    for (const child of children) killGroup(child.pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && children.some((c) => c.pid !== undefined && c.exitCode === null && c.signalCode === null && isAlive(c.pid))) {
      await sleep(20);
    }
    this.unregister();
    this.destroySync();
  }
}
