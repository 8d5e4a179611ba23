#!/usr/bin/env node
// Makes a fresh Debian machine ready to build and test nixfarm: the system
// tools it drives (Nix, redis-server, zstd, a static busybox for test derivations,
// the OpenSSH client, sshd for the bench's Nix remote builds; with --tests,
// Debian's chromium for the dashboard test, prometheus for the monitoring tests,
// xmllint for the JUnit test and
// git for the flake test), a Nix that really builds (its
// build users), and node_modules. Runs before node_modules exist, so it uses
// nothing but Node itself. Silent when everything is present already.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (line) => process.stderr.write(`ensure-machine: ${line}\n`);

const [major] = process.versions.node.split('.').map(Number);
if (major < 20) {
  say(`nixfarm needs Node.js 20 or newer; this is ${process.version} (${process.execPath}). Install Node 20+ and run again.`);
  process.exit(1);
}

function onPath(command) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, command);
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not in this dir
    }
  }
  return undefined;
}

/**
 * True for an ELF executable without a program interpreter (PT_INTERP):
 * statically linked. Test derivations run busybox inside Nix's sandbox,
 * where no dynamic loader or libc exists, so Debian's dynamically linked
 * `busybox` package will not do; `busybox-static` will.
 */
function isStaticElf(path) {
  let fd;
  try {
    fd = openSync(path, 'r');
    const header = Buffer.alloc(64);
    if (readSync(fd, header, 0, 64, 0) < 64 || header.readUInt32BE(0) !== 0x7f454c46) return false;
    const is64 = header[4] === 2;
    const le = header[5] === 1;
    const u16 = (b, o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b, o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const phoff = is64 ? Number(le ? header.readBigUInt64LE(32) : header.readBigUInt64BE(32)) : u32(header, 28);
    const phentsize = u16(header, is64 ? 54 : 42);
    const phnum = u16(header, is64 ? 56 : 44);
    const entry = Buffer.alloc(4);
    for (let i = 0; i < phnum; i++) {
      readSync(fd, entry, 0, 4, phoff + i * phentsize);
      if (u32(entry, 0) === 3 /* PT_INTERP */) return false;
    }
    return true;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

// What nixfarm needs from the system, and the Debian package that provides it.
const requirements = [
  { what: 'nix-store (Nix)', pkg: 'nix-bin', present: () => onPath('nix-store') !== undefined && onPath('nix-instantiate') !== undefined },
  { what: 'redis-server', pkg: 'redis-server', present: () => onPath('redis-server') !== undefined },
  { what: 'a static busybox at /bin/busybox', pkg: 'busybox-static', present: () => isStaticElf('/bin/busybox') },
  { what: 'ssh (OpenSSH client)', pkg: 'openssh-client', present: () => onPath('ssh') !== undefined },
  // the coordinator's binary cache compresses NARs with zstd as it sends them
  { what: 'zstd (for the binary cache)', pkg: 'zstd', present: () => onPath('zstd') !== undefined },
  // the bench's Nix remote builds (way b) reach simulated machines through a real sshd each
  { what: '/usr/sbin/sshd (OpenSSH server)', pkg: 'openssh-server', present: () => existsSync('/usr/sbin/sshd') },
  // the dashboard's end-to-end test drives Debian's chromium with playwright-core (which never downloads a browser here)
  { what: 'chromium (for the dashboard test)', pkg: 'chromium', present: () => existsSync(process.env.NIXFARM_CHROMIUM ?? '/usr/bin/chromium'), only: 'tests' },
  // the JUnit test validates `nixfarm build --junit` reports against a JUnit XSD with xmllint; git: the flake test's repository
  { what: 'xmllint (for the JUnit report test)', pkg: 'libxml2-utils', present: () => onPath('xmllint') !== undefined, only: 'tests' },
  { what: 'git (for the flake test)', pkg: 'git', present: () => onPath('git') !== undefined, only: 'tests' },
  // the Redis-over-TLS tests make their CA and certificates with openssl
  { what: 'openssl (for the Redis TLS tests)', pkg: 'openssl', present: () => onPath('openssl') !== undefined, only: 'tests' },
  // the coordinator shows a check's difference with diffoscope when it is installed (the minimal package: 0.8 MiB, no recommends)
  { what: 'diffoscope (for the reproducibility check tests)', pkg: 'diffoscope-minimal', present: () => onPath('diffoscope') !== undefined, only: 'tests' },
  // the sentinel-failover chaos scenario runs three sentinels over a primary and a replica
  { what: 'redis-sentinel (for the Sentinel failover scenario)', pkg: 'redis-sentinel', present: () => onPath('redis-sentinel') !== undefined, only: 'tests' },
  // the alert rules' test runs promtool; the Grafana board's test runs a private prometheus (never the package's service)
  {
    what: 'prometheus and promtool (for the monitoring tests)',
    pkg: 'prometheus',
    present: () => existsSync('/usr/bin/promtool'),
    only: 'tests',
    service: 'prometheus',
  },
  // the image test pushes with skopeo (what the coordinator runs for --publish-images) to Debian's docker-registry on loopback
  { what: 'skopeo (for the image publishing test)', pkg: 'skopeo', present: () => onPath('skopeo') !== undefined, only: 'tests' },
  {
    what: 'docker-registry (for the image publishing test)',
    pkg: 'docker-registry',
    present: () => onPath('docker-registry') !== undefined || existsSync('/usr/bin/docker-registry'),
    only: 'tests',
  },
].filter((r) => r.only === undefined || process.argv.includes(`--${r.only}`));

/**
 * A package installed for its binaries only must not leave its daemon running:
 * under systemd its postinst enabled and started the unit (without systemd,
 * invoke-rc.d starts nothing: no runlevel, or policy-rc.d in containers).
 */
function stopServices(units) {
  if (units.length === 0 || !existsSync('/run/systemd/system')) return;
  run('systemctl', ['disable', '--now', ...units]);
}

function run(command, args, options = {}) {
  say(`running ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, ...options });
  if (result.error) {
    say(`could not run ${command}: ${result.error.message}`);
    return false;
  }
  if (result.status !== 0) {
    say(`${command} ${args.join(' ')} failed with ${result.status ?? result.signal}`);
    return false;
  }
  return true;
}

let missing = requirements.filter((r) => !r.present());
if (missing.length > 0) {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const hasApt = existsSync('/etc/debian_version') && onPath('apt-get') !== undefined;
  if (isRoot && hasApt) {
    const packages = missing.map((r) => r.pkg);
    say(`missing ${missing.map((r) => r.what).join(', ')}: installing ${packages.join(' ')}`);
    // noninteractive: CI has no stdin, and a debconf prompt would hang it
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    if (!run('apt-get', ['update', '-q'], { env }) || !run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...packages], { env })) {
      process.exit(1);
    }
    stopServices(missing.flatMap((r) => (r.service === undefined ? [] : [r.service])));
    missing = requirements.filter((r) => !r.present());
  }
  if (missing.length > 0) {
    say('nixfarm cannot run on this machine yet. Missing:');
    for (const r of missing) say(`  - ${r.what} (Debian/Ubuntu package: ${r.pkg})`);
    say('Install them, for example:');
    say(`  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing.map((r) => r.pkg).join(' ')}`);
    if (missing.some((r) => r.pkg === 'nix-bin'))
      say('  Nix elsewhere: https://nixos.org/download (the official installer), then open a new shell so nix-store is on PATH');
    if (missing.some((r) => r.pkg === 'redis-server'))
      say("  Redis elsewhere: your distribution's redis package, or https://redis.io/docs/latest/operate/oss_and_stack/install/");
    if (missing.some((r) => r.pkg === 'busybox-static'))
      say('  busybox: a statically linked busybox must be at /bin/busybox (test derivations run it inside the Nix sandbox)');
    process.exit(1);
  }
}

// Nix installed is not Nix that builds: Debian's nix-bin without its
// recommended nix-setup-systemd leaves the compiled-in `build-users-group =
// nixbld` pointing at a group that does not exist, and every build as root
// fails. Only a real build tells, so build a trivial derivation, sandboxed,
// the way the coordinator's own builds run.
const BUILD_USERS_GROUP = 'nixbld';
// Nix's installer makes 32; Nix takes one per concurrent build
const BUILD_USER_COUNT = Math.max(32, cpus().length);

/** undefined when Nix built the probe; else Nix's error text */
function probeNixBuild() {
  // builtin:buildenv needs no shell or busybox in the store, yet goes through
  // build-user acquisition and the sandbox like any build. A fresh nonce makes
  // Nix really build; the paths are deleted after.
  const expr =
    '{ nonce }: derivation { name = "nixfarm-build-probe"; system = "builtin"; builder = "builtin:buildenv"; derivations = ""; manifest = "/dev/null"; inherit nonce; }';
  const nonce = `${process.pid}-${Date.now()}`;
  const nixOptions = ['--option', 'substituters', '', '--option', 'sandbox', 'true'];
  const instantiated = spawnSync('nix-instantiate', [...nixOptions, '--argstr', 'nonce', nonce, '-E', expr], { encoding: 'utf8' });
  if (instantiated.error) return instantiated.error.message;
  if (instantiated.status !== 0) return (instantiated.stderr || `nix-instantiate exited with ${instantiated.status ?? instantiated.signal}`).trim();
  const drv = instantiated.stdout.trim();
  const built = spawnSync('nix-store', [...nixOptions, '--realise', drv], { encoding: 'utf8' });
  const out = built.stdout?.trim();
  spawnSync('nix-store', ['--delete', ...(built.status === 0 && out ? [out] : []), drv], { stdio: 'ignore' });
  if (built.error) return built.error.message;
  if (built.status !== 0) return (built.stderr || `nix-store --realise exited with ${built.status ?? built.signal}`).trim();
  return undefined;
}

/** Nix's messages for a build-users group that is missing or empty (Nix 2.8, libstore/lock.cc) */
function lacksBuildUsers(error) {
  return (
    error.includes(`group '${BUILD_USERS_GROUP}' specified in 'build-users-group' does not exist`) ||
    error.includes(`build users group '${BUILD_USERS_GROUP}' has no members`)
  );
}

function getent(database, key) {
  return spawnSync('getent', [database, key], { stdio: 'ignore' }).status === 0;
}

/** As Nix's installer and Debian's nix-setup-systemd do: a system group, members without a login or a home */
function createBuildUsers() {
  const created = [];
  if (!getent('group', BUILD_USERS_GROUP)) {
    if (!run('groupadd', ['--system', BUILD_USERS_GROUP])) return undefined;
    created.push(`group ${BUILD_USERS_GROUP}`);
  }
  const nologin = existsSync('/usr/sbin/nologin') ? '/usr/sbin/nologin' : '/sbin/nologin';
  let users = 0;
  for (let i = 1; i <= BUILD_USER_COUNT; i++) {
    const user = `${BUILD_USERS_GROUP}${i}`;
    if (getent('passwd', user)) continue;
    const args = [
      '--system',
      '--gid',
      BUILD_USERS_GROUP,
      '--groups',
      BUILD_USERS_GROUP,
      '--no-user-group',
      '--no-create-home',
      '--home-dir',
      '/var/empty',
      '--shell',
      nologin,
      '--comment',
      `Nix build user ${i}`,
      '--password',
      '!',
      user,
    ];
    const result = spawnSync('useradd', args, { stdio: ['ignore', 'ignore', 'inherit'] });
    if (result.error || result.status !== 0) {
      say(`useradd ${user} failed${result.error ? `: ${result.error.message}` : ` with ${result.status}`}`);
      return undefined;
    }
    users++;
  }
  if (users > 0) created.push(`users ${BUILD_USERS_GROUP}1..${BUILD_USERS_GROUP}${BUILD_USER_COUNT} (no login shell, home /var/empty)`);
  return created;
}

const probeError = probeNixBuild();
if (probeError !== undefined) {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  let fixed = false;
  if (lacksBuildUsers(probeError) && isRoot) {
    say(
      `Nix cannot build yet: ${
        probeError
          .split('\n')
          .filter((l) => l.startsWith('error:'))
          .at(-1) ?? probeError
      }`,
    );
    const created = createBuildUsers();
    if (created !== undefined) {
      say(`created Nix's build users, as Nix's installer does: ${created.join(', ')}`);
      const again = probeNixBuild();
      if (again === undefined) {
        say('Nix builds now (probe: a sandboxed build of a trivial derivation)');
        fixed = true;
      } else {
        say(`Nix still cannot build after creating the build users:\n${again}`);
      }
    }
  }
  if (!fixed) {
    say('Nix is installed but cannot build (probe: a sandboxed build of a trivial derivation). Nix said:');
    for (const line of probeError.split('\n')) say(`  ${line}`);
    if (lacksBuildUsers(probeError)) {
      say(`Create Nix's build users as root (what Nix's installer does), then run again:`);
      say(`  groupadd --system ${BUILD_USERS_GROUP}`);
      say(
        `  for i in $(seq 1 ${BUILD_USER_COUNT}); do useradd --system --gid ${BUILD_USERS_GROUP} --groups ${BUILD_USERS_GROUP} --no-user-group --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin ${BUILD_USERS_GROUP}$i; done`,
      );
    }
    process.exit(1);
  }
}

// node_modules: npm writes node_modules/.package-lock.json on every install;
// if it is older than package-lock.json, the lock changed since (a pull, a new dependency).
const lock = join(root, 'package-lock.json');
const installed = join(root, 'node_modules', '.package-lock.json');
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : undefined);
const lockTime = mtime(lock);
const installedTime = mtime(installed);
if (installedTime === undefined || (lockTime !== undefined && installedTime < lockTime)) {
  const why = installedTime === undefined ? 'node_modules is missing' : 'package-lock.json is newer than node_modules';
  const npmArgs = lockTime === undefined ? ['install', '--no-audit', '--no-fund'] : ['ci', '--no-audit', '--no-fund'];
  say(`${why}: npm ${npmArgs[0]}`);
  // under `npm test`, npm_execpath is the npm that started us: use the same one
  const npmCli = process.env.npm_execpath;
  const npm = (args) => (npmCli?.endsWith('.js') ? run(process.execPath, [npmCli, ...args]) : run('npm', args));
  let ok = npm(npmArgs);
  if (!ok && npmArgs[0] === 'ci') {
    // npm 11's ci refuses this lock ("not in sync": optional platform packages
    // of msgpackr-extract that the registry here does not serve), while
    // install accepts it and leaves it unchanged.
    say('npm ci failed; falling back to npm install');
    ok = npm(['install', '--no-audit', '--no-fund']);
  }
  if (!ok) process.exit(1);
}
