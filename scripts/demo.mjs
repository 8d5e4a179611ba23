#!/usr/bin/env node
// `npm run demo`: a whole nixfarm on this machine, built from the real parts.
//
// A coordinator (with its own embedded redis-server), two workers, and one
// `nixfarm build` of examples/default.nix with a fresh salt, then a table of
// what ran where, checks that the outputs are valid in the coordinator's
// store, and a clean stop. On Linux as root each worker runs in a simulated
// machine: a private mount namespace with its own /nix, so every input and
// output really travels over the coordinator's SSH endpoint. Elsewhere both
// workers share this machine's store (see sharedStoreNote below).
//
// Runs after `npm run build` (it starts packages/cli/bin/nixfarm.js). Every
// process is started with an argument array, never a shell command line built
// from data; the one `sh -c` script (entering a machine) is a fixed string
// whose data travels as positional arguments.
//
// Environment: NIXFARM_DEMO_KEEP=1 keeps the work dir and logs;
// NIXFARM_DEMO_SHARED_STORE=1 forces the shared-store mode (as without root).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  createWriteStream,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  rmdirSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { basename, delimiter, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const NIXFARM = join(ROOT, 'packages', 'cli', 'bin', 'nixfarm.js');
const EXAMPLE = join(ROOT, 'examples', 'default.nix');
const BUSYBOX_DIR = join(ROOT, 'examples', '.busybox');
const WORKERS = ['demo-1', 'demo-2'];
const DEMO_GC_ROOTS = '/nix/var/nix/gcroots/nixfarm-demo';
const MAX_JOBS = 2;

const TIMEOUT = { coordinatorMs: 30_000, workersMs: 60_000, buildMs: 300_000, stopMs: 15_000, commandMs: 60_000 };

const startedAt = Date.now();
const isLinux = process.platform === 'linux';
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
const canIsolate = isLinux && isRoot && onPath('unshare') !== undefined && process.env.NIXFARM_DEMO_SHARED_STORE !== '1';

// ---------------------------------------------------------------- output

const useColour = process.stdout.isTTY && process.env.NO_COLOR === undefined;
const paint = (code) => (text) => (useColour ? `\x1b[${code}m${text}\x1b[0m` : String(text));
const bold = paint('1');
const dim = paint('2');
const green = paint('32');
const red = paint('31');

const say = (line = '') => process.stdout.write(`${line}\n`);
const step = (n, total, text) => say(`\n${bold(`[${n}/${total}]`)} ${bold(text)}`);
const detail = (line) => say(`      ${line}`);

function table(rows, align) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  return rows.map((r) =>
    r
      .map((cell, c) => (align[c] === 'r' ? String(cell).padStart(widths[c]) : String(cell).padEnd(widths[c])))
      .join('  ')
      .trimEnd(),
  );
}

// ---------------------------------------------------------------- processes

/** Every long-running child we started: stopped in reverse order at the end, killed on any exit. */
const children = [];
/** Short commands (worker-key, authorize, nixfarm build, nix-store queries) still running. */
const oneShots = new Set();
let workDir;
let gcRootsDir;
let cleanedUp = false;
/** Set on SIGINT/SIGTERM/SIGHUP: the signal handler owns the end from then on. */
let aborting = false;

function onPath(command) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      if (statSync(join(dir, command)).isFile()) return join(dir, command);
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Under `setpriv --pdeathsig KILL` where available: the child dies with us even if we are SIGKILLed. */
function withDeathSignal(command, args) {
  return isLinux && SETPRIV !== undefined ? { command: SETPRIV, args: ['--pdeathsig', 'KILL', '--', command, ...args] } : { command, args };
}

function killGroup(pid, signal) {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/**
 * Starts a long-running process in its own process group (so Ctrl-C reaches
 * only us, and we decide how it stops), its output going to a log file.
 */
function startProcess(name, command, args, env) {
  const log = join(workDir, 'logs', `${name}.log`);
  const out = createWriteStream(log, { flags: 'a' });
  const wrapped = withDeathSignal(command, args);
  const child = spawn(wrapped.command, wrapped.args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  const entry = { name, child, log, exited: new Promise((resolve) => child.once('close', (code, signal) => resolve(code ?? signal))) };
  child.once('error', (error) => out.write(`demo: could not start ${command}: ${error.message}\n`));
  children.push(entry);
  return entry;
}

/** Runs a command to completion (argument array, no shell) with a time limit; never rejects on a non-zero exit. */
function run(command, args, { env = process.env, timeoutMs = TIMEOUT.commandMs, onStderrLine } = {}) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    oneShots.add(child);
    child.once('close', () => oneShots.delete(child));
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => {
      stderr += c;
      if (onStderrLine === undefined) return;
      const lines = (partial + c).split('\n');
      partial = lines.pop();
      for (const line of lines) onStderrLine(line);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: `${stderr}${error.message}\n`, timedOut });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (partial !== '' && onStderrLine !== undefined) onStderrLine(partial);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

const nixfarm = (args, options) => run(process.execPath, [NIXFARM, ...args], options);

function tail(file, lines = 25) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Pids of every process that has this machine's nix dir mounted on /nix,
 * spawned by us or not (a builder that left our process groups).
 */
function processesInside(name) {
  const root = `/${basename(workDir)}/machines/${name}/nix`;
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let mountinfo;
    try {
      mountinfo = readFileSync(`/proc/${entry}/mountinfo`, 'utf8');
    } catch {
      continue;
    }
    // mountinfo fields: 4th the mount's root within its filesystem, 5th the mount point
    const inside = mountinfo.split('\n').some((line) => {
      const f = line.split(' ');
      return f[4] === '/nix' && f[3] !== undefined && f[3].endsWith(root);
    });
    if (inside) pids.push(Number(entry));
  }
  return pids;
}

function removeTree(dir) {
  if (dir === undefined || !existsSync(dir)) return;
  // Nix makes store objects read-only; rm needs write permission on their dirs
  spawnSync('chmod', ['-R', 'u+w', '--', dir], { stdio: 'ignore' });
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Kills everything we started, at once: our children's process groups and whatever is left inside the machines. */
function killEverything() {
  for (const child of oneShots) child.kill('SIGKILL');
  for (const { child } of children) killGroup(child.pid, 'SIGKILL');
  if (canIsolate && workDir !== undefined) {
    for (const name of WORKERS) {
      for (const pid of processesInside(name)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  }
}

/** Last resort, synchronous (also runs from process 'exit'): kill everything we started, remove what we made. */
function hardCleanup() {
  if (cleanedUp) return;
  cleanedUp = true;
  killEverything();
  if (process.env.NIXFARM_DEMO_KEEP === '1') return;
  removeTree(gcRootsDir);
  if (gcRootsDir?.startsWith(`${DEMO_GC_ROOTS}/`)) {
    try {
      rmdirSync(DEMO_GC_ROOTS); // the demos' shared parent, once no other demo uses it
    } catch {
      // another demo's roots are in it
    }
  }
  removeTree(workDir);
}

process.on('exit', hardCleanup);
const SIGNAL_EXIT = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };
for (const signal of Object.keys(SIGNAL_EXIT)) {
  process.once(signal, async () => {
    aborting = true;
    process.stderr.write(`\ndemo: ${signal}: stopping everything it started\n`);
    // Kill first, then wait until they are gone, so that nothing writes into the dirs we remove.
    const gone = [...[...oneShots].map((c) => new Promise((r) => c.once('close', r))), ...children.map((c) => c.exited)];
    killEverything();
    await Promise.race([Promise.all(gone), sleep(5000)]);
    hardCleanup();
    process.exit(SIGNAL_EXIT[signal]);
  });
}

/** SIGTERM to the process itself (it drains and stops its own children), SIGKILL to its group after a grace period. */
async function stopProcess(entry) {
  if (entry.child.exitCode !== null || entry.child.signalCode !== null) return entry.exited;
  try {
    entry.child.kill('SIGTERM');
  } catch {
    // gone
  }
  const result = await Promise.race([entry.exited, sleep(TIMEOUT.stopMs).then(() => 'timeout')]);
  killGroup(entry.child.pid, 'SIGKILL'); // whatever it left behind in its group
  return result === 'timeout' ? `did not stop within ${TIMEOUT.stopMs / 1000} s (killed)` : result;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The coordinator's read token, once it has started (the API wants a bearer token on every route but /api/health). */
let apiToken;

async function api(base, path) {
  const response = await fetch(new URL(path, base), { signal: AbortSignal.timeout(10_000), headers: { authorization: `Bearer ${apiToken}` } });
  const text = await response.text();
  if (!response.ok) throw new Error(`GET ${path}: HTTP ${response.status}: ${text}`);
  return JSON.parse(text);
}

class DemoError extends Error {}

// ---------------------------------------------------------------- the demo

/** examples/.busybox: bin/busybox (a copy of the static busybox) and bin/sh -> busybox, the example's only tool. */
function ensureBusyboxDir() {
  const source = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p)) ?? onPath('busybox');
  if (source === undefined)
    throw new DemoError(
      'no busybox found: install a static busybox at /bin/busybox (Debian: apt-get install busybox-static; `npm run demo` does this on Debian)',
    );
  const bin = join(BUSYBOX_DIR, 'bin');
  mkdirSync(bin, { recursive: true });
  const target = join(bin, 'busybox');
  if (!existsSync(target) || statSync(target).size !== statSync(source).size) {
    rmSync(target, { force: true });
    copyFileSync(source, target);
    chmodSync(target, 0o755);
  }
  const sh = join(bin, 'sh');
  let ok = false;
  try {
    ok = lstatSync(sh).isSymbolicLink();
  } catch {
    ok = false;
  }
  if (!ok) {
    rmSync(sh, { force: true });
    symlinkSync('busybox', sh);
  }
}

/** The environment of a process on this machine, with no caches (none is reachable, and the demo must really build). */
function hostEnv() {
  return { ...process.env, NIX_CONFIG: 'substituters =' };
}

/** The environment inside a simulated machine: nothing pointing Nix at the host's store, its own HOME, nix.conf lines. */
function machineEnv(machineDir) {
  const env = { ...process.env };
  for (const name of ['NIX_REMOTE', 'NIX_STORE_DIR', 'NIX_STATE_DIR', 'NIX_LOG_DIR', 'NIX_CONF_DIR', 'NIX_USER_CONF_FILES', 'NIX_PATH']) delete env[name];
  return {
    ...env,
    HOME: join(machineDir, 'home'),
    XDG_CACHE_HOME: join(machineDir, 'home', '.cache'),
    // Simulated machines share the host's uids: with build users, two stores
    // would pick the same nixbld user and one store's cleanup would kill the
    // other's builder. A real machine has its own users; here, none.
    NIX_CONFIG: ['substituters =', 'build-users-group ='].join('\n'),
  };
}

/** The fixed script that enters a machine: $0 is its nix dir, "$@" the command. Data only as arguments. */
const ENTER_MACHINE = 'mount --bind "$0" /nix && exec "$@"';

async function main() {
  const mode = canIsolate ? 'machines' : 'shared';
  const salt = randomBytes(6).toString('hex');
  const total = 5;

  say(bold('nixfarm demo: a coordinator, two workers, one build'));
  if (mode === 'machines') {
    detail(`Each worker runs in a simulated machine: a private mount namespace with its own /nix`);
    detail(`store, empty at first. Inputs and outputs travel over the coordinator's SSH endpoint.`);
  } else {
    const why =
      process.env.NIXFARM_DEMO_SHARED_STORE === '1'
        ? 'NIXFARM_DEMO_SHARED_STORE=1'
        : !isLinux
          ? `this is ${process.platform}, not Linux`
          : !isRoot
            ? 'not running as root'
            : 'unshare(1) is missing';
    detail(`${why}: no mount namespaces here, so both workers run directly on`);
    detail(`this machine and share its Nix store. Every build still goes through the farm (queue,`);
    detail(`SSH endpoint, a worker's serve session, report), but copies find nothing to move.`);
    detail(`Run as root on Linux to give each worker its own store.`);
  }

  // Nix must work for this user before anything starts; say how to fix it if not.
  const probe = await run('nix-instantiate', ['--eval', '--expr', 'builtins.currentSystem'], { env: hostEnv() });
  if (probe.code !== 0) {
    throw new DemoError(
      `Nix does not work for this user: nix-instantiate said\n    ${probe.stderr.trim().split('\n').join('\n    ')}\n` +
        `  Debian's nix-bin is a single-user install owned by root: run the demo as root (sudo npm run demo).\n` +
        `  With a multi-user Nix, check that nix-daemon runs and that this user may use it.`,
    );
  }
  ensureBusyboxDir();
  workDir = mkdtempSync(join(tmpdir(), 'nixfarm-demo-'));
  mkdirSync(join(workDir, 'logs'));
  const coordinatorState = join(workDir, 'coordinator');
  // GC roots must live under Nix's gcroots to count; the demo removes its own at the end.
  const perUser = `/nix/var/nix/gcroots/per-user/${userInfo().username}`;
  gcRootsDir = isRoot
    ? join(DEMO_GC_ROOTS, basename(workDir))
    : existsSync(perUser)
      ? join(perUser, `nixfarm-demo-${basename(workDir)}`)
      : join(workDir, 'gcroots');
  detail(
    dim(`work dir ${workDir} (${process.env.NIXFARM_DEMO_KEEP === '1' ? 'kept: NIXFARM_DEMO_KEEP=1' : 'removed at the end; NIXFARM_DEMO_KEEP=1 keeps it'})`),
  );

  // ---- 1. coordinator
  step(1, total, 'Starting the coordinator (embedded Redis, HTTP API, SSH store endpoint)');
  const coordinator = startProcess(
    'coordinator',
    process.execPath,
    [NIXFARM, 'coordinator', '--state-dir', coordinatorState, '--http-port', '0', '--ssh-host', '127.0.0.1', '--ssh-port', '0', '--gc-roots-dir', gcRootsDir],
    hostEnv(),
  );
  const addressFile = join(coordinatorState, 'coordinator.json');
  const deadline = Date.now() + TIMEOUT.coordinatorMs;
  while (!existsSync(addressFile)) {
    // the CLI reports a fatal error as one line "nixfarm: ..." before it exits
    if (/^nixfarm: /m.test(tail(coordinator.log, 200))) throw new DemoError(`the coordinator could not start:\n${tail(coordinator.log, 10)}`);
    if (coordinator.child.exitCode !== null || coordinator.child.signalCode !== null)
      throw new DemoError(`the coordinator exited (${coordinator.child.exitCode ?? coordinator.child.signalCode}):\n${tail(coordinator.log)}`);
    if (Date.now() > deadline) throw new DemoError(`the coordinator was not ready after ${TIMEOUT.coordinatorMs / 1000} s:\n${tail(coordinator.log)}`);
    await sleep(50);
  }
  const address = JSON.parse(readFileSync(addressFile, 'utf8'));
  apiToken = readFileSync(join(coordinatorState, 'api-token-read'), 'utf8').trim();
  // The CLI finds the admin token in the coordinator's state dir, as it does on the coordinator's own machine.
  process.env.NIXFARM_STATE_DIR = coordinatorState;
  detail(`API        ${address.httpUrl} ${dim(`(tokens: ${relative(ROOT, join(coordinatorState, 'api-token-admin'))}, api-token-read)`)}`);
  detail(`Redis      ${address.redisUrl} ${dim('(its own redis-server, data in the state dir)')}`);
  detail(`SSH store  ${address.sshHost}:${address.sshPort}, host key ${address.hostKeyFingerprint}`);

  // ---- 2. workers
  step(2, total, `Starting workers ${WORKERS.join(' and ')} (max-jobs ${MAX_JOBS} each)`);
  // keys first (in parallel: each is one short CLI call), then both workers
  const keys = await Promise.all(
    WORKERS.map(async (name) => {
      const machineDir = join(workDir, 'machines', name);
      for (const d of ['nix', 'home', 'state']) mkdirSync(join(machineDir, d), { recursive: true });
      const key = await nixfarm(['worker-key', '--state-dir', join(machineDir, 'state')]);
      if (key.code !== 0) throw new DemoError(`nixfarm worker-key failed:\n${key.stderr}`);
      return { name, machineDir, key: key.stdout.trim() };
    }),
  );
  for (const { name, machineDir, key } of keys) {
    // one at a time: authorize appends to the coordinator's authorized_keys
    const auth = await nixfarm(['authorize', '--state-dir', coordinatorState, key]);
    if (auth.code !== 0) throw new DemoError(`nixfarm authorize failed:\n${auth.stderr}`);
    const workerArgs = [
      NIXFARM,
      'worker',
      '--join',
      coordinatorState,
      '--name',
      name,
      '--state-dir',
      join(machineDir, 'state'),
      '--max-jobs',
      String(MAX_JOBS),
      '--nix-option',
      'substituters=',
    ];
    const fingerprint = auth.stdout
      .trim()
      .replace(/^authorised /, '')
      .replace(/ in .*$/, '');
    if (mode === 'machines') {
      workerArgs.push('--nix-option', 'sandbox=true');
      startProcess(
        name,
        'unshare',
        ['-m', '--propagation', 'private', 'sh', '-c', ENTER_MACHINE, join(machineDir, 'nix'), process.execPath, ...workerArgs],
        machineEnv(machineDir),
      );
      detail(`${name}: key ${fingerprint} authorised; its store: ${relative(workDir, join(machineDir, 'nix'))} on /nix`);
    } else {
      startProcess(name, process.execPath, workerArgs, hostEnv());
      detail(`${name}: key ${fingerprint} authorised; shares this machine's store`);
    }
  }
  const workersDeadline = Date.now() + TIMEOUT.workersMs;
  for (;;) {
    const { workers } = await api(address.httpUrl, '/api/workers');
    const alive = new Set(workers.filter((w) => w.alive).map((w) => w.name));
    if (WORKERS.every((n) => alive.has(n))) break;
    for (const entry of children.filter((c) => WORKERS.includes(c.name))) {
      if (entry.child.exitCode !== null || entry.child.signalCode !== null)
        throw new DemoError(`worker ${entry.name} exited (${entry.child.exitCode ?? entry.child.signalCode}):\n${tail(entry.log)}`);
    }
    if (Date.now() > workersDeadline)
      throw new DemoError(
        `workers not registered after ${TIMEOUT.workersMs / 1000} s:\n${children.map((c) => `--- ${c.name}\n${tail(c.log, 10)}`).join('\n')}`,
      );
    await sleep(200);
  }
  const registered = await nixfarm(['workers', '--coordinator', address.httpUrl]);
  detail(dim('$ nixfarm workers'));
  for (const line of registered.stdout.trimEnd().split('\n')) detail(dim(line));

  // ---- 3. build
  step(3, total, `Building ${relative(ROOT, EXAMPLE)} on the farm`);
  const buildArgs = ['build', relative(ROOT, EXAMPLE), '-A', 'all', '--argstr', 'salt', salt];
  detail(`$ nixfarm ${buildArgs.join(' ')}`);
  detail(dim(`(salt ${salt} is fresh, so no store has these derivations yet: everything really builds)`));
  const buildStarted = Date.now();
  const build = await nixfarm([...buildArgs, '--coordinator', address.httpUrl, '--json'], {
    env: hostEnv(),
    timeoutMs: TIMEOUT.buildMs,
    onStderrLine: (line) => line.trim() !== '' && detail(`${dim('|')} ${line}`),
  });
  const buildSeconds = ((Date.now() - buildStarted) / 1000).toFixed(1);
  if (build.timedOut) throw new DemoError(`nixfarm build did not finish within ${TIMEOUT.buildMs / 1000} s`);
  let runView;
  try {
    runView = JSON.parse(build.stdout);
  } catch {
    throw new DemoError(`nixfarm build exited with ${build.code} without a run:\n${build.stderr}`);
  }
  detail(`${build.code === 0 ? green('run succeeded') : red(`run ${runView.status}`)} in ${buildSeconds} s (nixfarm build exited with ${build.code})`);

  // ---- 4. what ran where
  step(4, total, `What ran where ${dim(`(GET /api/runs/${runView.id}/derivations)`)}`);
  const { derivations } = await api(address.httpUrl, `/api/runs/${runView.id}/derivations`);
  derivations.sort((a, b) => (a.startedAt ?? Infinity) - (b.startedAt ?? Infinity) || a.name.localeCompare(b.name));
  const ms = (v) => (v === undefined ? '-' : `${Math.round(v)} ms`);
  const rows = [['derivation', 'worker', 'status', 'copy-in', 'build', 'copy-out', 'total']];
  for (const d of derivations) {
    rows.push([d.name, d.worker ?? '-', d.status, ms(d.timings?.copyInMs), ms(d.timings?.buildMs), ms(d.timings?.copyOutMs), ms(d.timings?.totalMs)]);
  }
  for (const line of table(rows, ['l', 'l', 'l', 'r', 'r', 'r', 'r'])) detail(line);
  const perWorker = WORKERS.map((w) => `${w}: ${derivations.filter((d) => d.worker === w).length}`).join(', ');
  detail(dim(`builds per worker: ${perWorker}`));
  for (const d of derivations.filter((x) => x.error !== undefined)) detail(red(`${d.name}: ${d.error}`));

  // ---- 5. outputs and checks
  step(5, total, 'Outputs, checked in the coordinator store');
  const problems = [];
  if (build.code !== 0 || runView.status !== 'succeeded') problems.push(`the run ended ${runView.status} (nixfarm build exit code ${build.code})`);
  if (runView.status === 'succeeded')
    for (const r of runView.results ?? []) detail(`${r.attr}${r.outputName === 'out' ? '' : `.${r.outputName}`} -> ${bold(r.outputPath)}`);

  // every output of every derivation of the run, as the coordinator's store knows them
  const built = derivations.filter((d) => d.status === 'succeeded');
  const drvPaths = built.map((d) => d.drvPath);
  let outputs = [];
  if (drvPaths.length > 0) {
    const q = await run('nix-store', ['--query', '--outputs', ...drvPaths], { env: hostEnv() });
    if (q.code !== 0) problems.push(`nix-store --query --outputs failed: ${q.stderr.trim()}`);
    outputs = q.stdout.split('\n').filter((l) => l !== '');
  }
  if (outputs.length > 0) {
    const check = await run('nix-store', ['--check-validity', '--print-invalid', ...outputs], { env: hostEnv() });
    const invalid = check.stdout.split('\n').filter((l) => l !== '');
    if (check.code !== 0 || invalid.length > 0) problems.push(`not valid in the coordinator store: ${invalid.join(' ') || check.stderr.trim()}`);
    else
      detail(
        `${green('ok')} all ${outputs.length} outputs of the ${drvPaths.length} built derivations are valid in the coordinator's store (nix-store --check-validity)`,
      );
  }
  if (mode === 'machines' && drvPaths.length > 0) {
    // Proof of where each build ran: its outputs exist in that machine's own store.
    const misplaced = [];
    for (const d of built) {
      if (d.worker === undefined || !WORKERS.includes(d.worker)) continue;
      const q = await run('nix-store', ['--query', '--outputs', d.drvPath], { env: hostEnv() });
      for (const out of q.stdout.split('\n').filter((l) => l !== '')) {
        if (!existsSync(join(workDir, 'machines', d.worker, 'nix', 'store', basename(out)))) misplaced.push(`${basename(out)} (not in ${d.worker}'s store)`);
      }
    }
    if (misplaced.length > 0) problems.push(`outputs missing from the store of the machine that built them: ${misplaced.join(', ')}`);
    else detail(`${green('ok')} each output is also in the store of the machine that built it`);
  }
  const release = runView.results?.find((r) => r.attr === 'all')?.outputPath;
  if (release !== undefined && problems.length === 0) {
    const hello = await run(join(release, 'app', 'bin', 'hello'), ['farm']);
    if (hello.code === 0) {
      detail(`${green('ok')} the built app runs: ${release.slice(0, 20)}.../app/bin/hello farm`);
      for (const line of hello.stdout.trimEnd().split('\n')) detail(`   ${dim('>')} ${line}`);
    } else {
      problems.push(`the built app did not run (${hello.code}): ${hello.stderr.trim()}`);
    }
  }

  return problems;
}

async function stopAll() {
  say(`\n${bold('Stopping')} workers, then the coordinator (SIGTERM; they drain and exit)`);
  const workers = children.filter((c) => c.name !== 'coordinator');
  const outcomes = await Promise.all(workers.map(async (entry) => [entry.name, await stopProcess(entry)]));
  for (const entry of children.filter((c) => c.name === 'coordinator')) outcomes.push([entry.name, await stopProcess(entry)]);
  detail(outcomes.map(([n, r]) => `${n}: ${r === 0 ? 'exit 0' : r}`).join(', '));
  return outcomes.filter(([, r]) => r !== 0).map(([n, r]) => `${n} stopped with ${r}`);
}

const never = () => new Promise(() => setInterval(() => undefined, 60_000));
let problems = [];
try {
  problems = await main();
} catch (error) {
  problems = [error instanceof DemoError ? error.message : error.stack];
}
// after a signal, what failed here failed because we killed it: let the handler finish
if (aborting) await never();
if (children.length > 0) {
  try {
    problems.push(...(await stopAll()));
  } catch (error) {
    problems.push(`stopping: ${error.message}`);
  }
}
if (problems.length > 0) {
  for (const c of children) process.stderr.write(`\n--- last lines of ${c.name}'s log ---\n${tail(c.log)}\n`);
}
hardCleanup();
const seconds = ((Date.now() - startedAt) / 1000).toFixed(1);
if (problems.length === 0) {
  say(`\n${green(bold('Demo finished'))} in ${seconds} s. Everything it started is stopped and its temp dirs are removed.`);
  say(`Next: docs/operations.md (running a real farm), or \`node packages/cli/bin/nixfarm.js --help\`.`);
  process.exit(0);
} else {
  say(`\n${red(bold('Demo failed'))} after ${seconds} s:`);
  for (const p of problems) say(`  - ${p}`);
  process.exit(1);
}
