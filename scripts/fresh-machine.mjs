#!/usr/bin/env node
// Runs a command as on a fresh machine, as far as one machine allows: in a
// private mount namespace whose /etc is a copy without Nix's build users
// (group nixbld, users nixbld1..N), whose /nix starts empty, and with a fresh
// HOME. There it first runs ensure-machine, which must find that Nix cannot
// build yet, create the build users and prove a build, then the command.
// `npm test` runs the whole suite this way, so CI rehearses what a fresh
// machine lacks every time, not only on the first run of a new machine.
//
// What it cannot simulate: Debian packages and node_modules already
// installed (apt-get and npm ran on the real machine first), the kernel,
// and anything outside /etc, /nix and HOME.
//
//   node scripts/fresh-machine.mjs [--keep] -- COMMAND [ARGS...]
//
// NIXFARM_FRESH_MACHINE=0 runs the command on the machine as it is. Without
// root or unshare(1) it says so and does the same.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(import.meta.url);
const root = join(dirname(script), '..');
const say = (line) => process.stderr.write(`fresh-machine: ${line}\n`);

/** Nix's build group and users, as its installer and Debian's nix-setup-systemd name them */
const isBuildUserEntry = (line) => /^nixbld\d*:/.test(line);
const ACCOUNT_FILES = ['passwd', 'group', 'shadow', 'gshadow'];

const args = process.argv.slice(2);
const separator = args.indexOf('--');
const options = separator === -1 ? args : args.slice(0, separator);
const command = separator === -1 ? [] : args.slice(separator + 1);
if (command.length === 0) {
  say('usage: node scripts/fresh-machine.mjs [--keep] -- COMMAND [ARGS...]');
  process.exit(2);
}

/** Runs a child with this terminal, forwarding Ctrl-C and SIGTERM; resolves to its exit code. */
function runChild(file, childArgs, env = process.env) {
  return new Promise((resolve) => {
    const child = spawn(file, childArgs, { stdio: 'inherit', env, cwd: root });
    const forward = (signal) => () => child.kill(signal);
    const handlers = { SIGINT: forward('SIGINT'), SIGTERM: forward('SIGTERM') };
    for (const [signal, handler] of Object.entries(handlers)) process.on(signal, handler);
    child.once('error', (error) => {
      say(`could not run ${file}: ${error.message}`);
      resolve(1);
    });
    child.once('close', (status, signal) => {
      for (const [sig, handler] of Object.entries(handlers)) process.off(sig, handler);
      resolve(status ?? 128 + (constants.signals[signal] ?? 0));
    });
  });
}

function must(file, fileArgs) {
  const result = spawnSync(file, fileArgs, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.error || result.status !== 0) {
    say(`${file} ${fileArgs.join(' ')} failed${result.error ? `: ${result.error.message}` : ` with ${result.status ?? result.signal}`}`);
    process.exit(1);
  }
}

if (options[0] === '--inside') {
  // In the new mount namespace (private propagation: nothing here reaches the machine's mounts).
  const dir = options[1];
  must('mount', ['--bind', join(dir, 'etc'), '/etc']);
  if (!existsSync('/nix')) mkdirSync('/nix');
  must('mount', ['--bind', join(dir, 'nix'), '/nix']);
  const lookup = spawnSync('getent', ['group', 'nixbld'], { stdio: 'ignore' });
  if (lookup.status === 0) {
    say('the nixbld group is still visible inside; this is no rehearsal of a fresh machine');
    process.exit(1);
  }
  say(`inside: /etc without Nix build users, empty /nix, HOME=${process.env.HOME}`);
  const ensured = await runChild(process.execPath, [join(root, 'scripts', 'ensure-machine.mjs')]);
  if (ensured !== 0) process.exit(ensured);
  process.exit(await runChild(command[0], command.slice(1)));
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const hasUnshare = spawnSync('unshare', ['--version'], { stdio: 'ignore' }).status === 0;
if (process.env.NIXFARM_FRESH_MACHINE === '0' || !isRoot || !hasUnshare || process.platform !== 'linux') {
  const why = process.env.NIXFARM_FRESH_MACHINE === '0' ? 'NIXFARM_FRESH_MACHINE=0' : 'it needs root and unshare(1) on Linux';
  say(`not rehearsing a fresh machine (${why}); running on this machine as it is`);
  process.exit(await runChild(command[0], command.slice(1)));
}

const dir = mkdtempSync('/tmp/nixfarm-fresh-');
say(`rehearsing a fresh machine in ${dir}: a copy of /etc without Nix's build users, an empty /nix, a fresh HOME`);
must('cp', ['-a', '/etc', join(dir, 'etc')]);
for (const name of ACCOUNT_FILES) {
  const file = join(dir, 'etc', name);
  if (!existsSync(file)) continue;
  const lines = readFileSync(file, 'utf8').split('\n');
  writeFileSync(file, lines.filter((line) => !isBuildUserEntry(line)).join('\n'));
}
mkdirSync(join(dir, 'nix'));
mkdirSync(join(dir, 'home'));
const env = { ...process.env, HOME: join(dir, 'home') };
for (const name of ['XDG_CACHE_HOME', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'XDG_STATE_HOME', 'NIX_PATH', 'NIX_REMOTE']) delete env[name];
const code = await runChild('unshare', ['--mount', '--propagation', 'private', '--', process.execPath, script, '--inside', dir, '--', ...command], env);
if (options.includes('--keep')) say(`kept ${dir}`);
else rmSync(dir, { recursive: true, force: true });
process.exit(code);
