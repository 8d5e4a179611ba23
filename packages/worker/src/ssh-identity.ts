import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { NixfarmError, ValidationError, loadOrCreateSshKey, parseSshPublicKey, writeFileAtomic, type CopyCompression } from '@nixfarm/shared';

const WORKER_KEY_FILE = 'id_ed25519';
/** The host the worker's serve sessions ssh to (`ssh -F <config> nixfarm-coordinator nix-store --serve --write`); the ssh config maps it to host and port. */
export const COORDINATOR_HOST_ALIAS = 'nixfarm-coordinator';
/** The user name the worker logs in as; the coordinator's endpoint accepts any, this one reads well in its logs. */
const SSH_USER = 'nixfarm';

export interface WorkerKey {
  privateKeyPath: string;
  /** OpenSSH private key text: it also signs the worker's reports */
  privateKey: string;
  /** "ssh-ed25519 AAAA... comment": what the coordinator's operator authorises */
  publicKeyLine: string;
  fingerprint: string;
}

class WorkerKeyFileError extends NixfarmError {
  constructor(path: string, reason: string, cause?: unknown) {
    super('invalid-worker-key-file', `cannot use the worker key ${path}: ${reason}`, { retryable: false, cause });
  }
}

/**
 * The worker's SSH identity: created on first start, then kept, since the
 * coordinator authorises it by its fingerprint. Written in OpenSSH's format
 * so that the OpenSSH client its serve sessions run can use it.
 */
export async function loadOrCreateWorkerKey(stateDir: string): Promise<WorkerKey> {
  const dir = resolve(stateDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const key = await loadOrCreateSshKey(
    join(dir, WORKER_KEY_FILE),
    `nixfarm-worker@${hostname()}`,
    (path, reason, cause) => new WorkerKeyFileError(path, reason, cause),
  );
  return { privateKeyPath: key.privateKeyPath, privateKey: key.privateKey, publicKeyLine: key.publicKeyLine, fingerprint: key.fingerprint };
}

export interface SshClientConfigOptions {
  stateDir: string;
  /** the coordinator's SSH endpoint */
  host: string;
  port: number;
  /** the coordinator's public host key line, pinned: nothing else is trusted */
  hostKeyLine: string;
  privateKeyPath: string;
  /** share one connection between the worker's serve sessions (default true) */
  controlMaster?: boolean;
  /** compress the SSH stream (zlib, both directions), for slow links; default none */
  compression?: CopyCompression;
}

export interface SshClientConfig {
  configPath: string;
  knownHostsPath: string;
  /** ControlPath as written in the config (%C unexpanded, other % doubled); undefined without ControlMaster */
  controlPath: string | undefined;
  /** the directory of the control socket: <stateDir>/ssh, or a private one under the temp dir when that path is too long */
  controlDir: string | undefined;
  hostAlias: typeof COORDINATOR_HOST_ALIAS;
  /** the same config as NIX_SSHOPTS, for Nix's own ssh tools (nix-copy-closure) against the endpoint */
  nixSshOpts: string;
}

/** The ciphers offered, in order of preference (see the config written below). */
const SSH_CIPHERS = ['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes128-ctr', 'aes256-ctr'] as const;

/** sun_path is 104 bytes on macOS (108 on Linux), including the NUL. */
const SOCKET_PATH_MAX = 103;
/** What OpenSSH adds to a ControlPath: `%C` expands to 40 hex digits, and the master binds `<path>.<16 random chars>` before renaming it. */
const CONTROL_PATH_SUFFIX_LENGTH = '/cm-'.length + 40 + 17;

/**
 * Writes an OpenSSH client config that reaches the coordinator as
 * `nixfarm-coordinator`, with its host key pinned, the worker key only,
 * no prompts, and one multiplexed connection for all of the worker's serve sessions.
 * `-F` makes ssh read this file alone: nothing in ~/.ssh or /etc/ssh applies.
 */
export async function writeSshClientConfig(options: SshClientConfigOptions): Promise<SshClientConfig> {
  const stateDir = resolve(options.stateDir);
  assertConfigPath('state dir', stateDir);
  if (!isAbsolute(options.privateKeyPath)) throw new ValidationError(`the worker key path must be absolute: ${options.privateKeyPath}`);
  assertConfigPath('worker key path', options.privateKeyPath);
  if (!/^[A-Za-z0-9.:_-]+$/.test(options.host)) throw new ValidationError(`not a host name or address: ${JSON.stringify(options.host)}`);
  if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) throw new ValidationError(`not a TCP port: ${options.port}`);
  const hostKey = parseSshPublicKey(options.hostKeyLine);

  const sshDir = join(stateDir, 'ssh');
  await mkdir(sshDir, { recursive: true, mode: 0o700 });
  await chmod(sshDir, 0o700);
  const configPath = join(sshDir, 'config');
  const knownHostsPath = join(sshDir, 'known_hosts');
  const controlDir = options.controlMaster === false ? undefined : await controlSocketDir(sshDir, stateDir);
  // %C (a hash of host, port and user) is the one token left for ssh to expand.
  const controlPath = controlDir === undefined ? undefined : `${escapeTokens(controlDir)}/cm-%C`;

  const lines = [
    '# Written by nixfarm on every worker start; edits are lost.',
    `Host ${COORDINATOR_HOST_ALIAS}`,
    `  HostName ${options.host}`,
    `  Port ${options.port}`,
    `  User ${SSH_USER}`,
    `  IdentityFile ${escapeTokens(options.privateKeyPath)}`,
    '  IdentitiesOnly yes',
    '  IdentityAgent none',
    '  PreferredAuthentications publickey',
    `  UserKnownHostsFile ${escapeTokens(knownHostsPath)}`,
    '  GlobalKnownHostsFile /dev/null',
    '  StrictHostKeyChecking yes',
    '  UpdateHostKeys no',
    // The alias, not host:port, names the key: moving the coordinator to another address needs no new known_hosts entry.
    `  HostKeyAlias ${COORDINATOR_HOST_ALIAS}`,
    '  BatchMode yes',
    '  ForwardAgent no',
    '  ForwardX11 no',
    '  ClearAllForwardings yes',
    '  LogLevel ERROR',
    ...(controlPath === undefined ? ['  ControlMaster no'] : ['  ControlMaster auto', `  ControlPath ${controlPath}`, '  ControlPersist 60']),
    // AES-GCM first: with AES-NI it is the cheapest cipher for OpenSSH and for ssh2's native binding alike (OpenSSH's own
    // first choice is chacha20-poly1305; 512 MiB through the endpoint took 1.35 s against 1.89 s on a quiet machine); the rest stay as fallbacks.
    `  Ciphers ${SSH_CIPHERS.join(',')}`,
    // SSH's own zlib (zlib@openssh.com after authentication), as Nix's `?compress=true` on ssh:// stores: every channel, both ways.
    `  Compression ${options.compression === 'zlib' ? 'yes' : 'no'}`,
    '  ServerAliveInterval 15',
    '  ConnectTimeout 10',
    '',
  ];
  await writeFileAtomic(knownHostsPath, `${COORDINATOR_HOST_ALIAS} ${hostKey.keyText}\n`, 0o600);
  await writeFileAtomic(configPath, lines.join('\n'), 0o600);
  return { configPath, knownHostsPath, controlPath, controlDir, hostAlias: COORDINATOR_HOST_ALIAS, nixSshOpts: `-F ${configPath}` };
}

/**
 * Nix splits NIX_SSHOPTS on whitespace without quoting, and ssh_config gives
 * quotes, backslashes and `#` meanings of their own: such paths cannot be
 * passed through both faithfully, so they are refused with a clear reason.
 */
function assertConfigPath(what: string, path: string): void {
  const bad = /[\s"'`\\#\x00-\x1f\x7f]/.exec(path);
  if (bad !== null) {
    throw new ValidationError(
      `the ${what} ${JSON.stringify(path)} contains ${JSON.stringify(bad[0])}; nixfarm passes it to ssh through NIX_SSHOPTS and ssh_config, which cannot carry whitespace, quotes, backslashes or #: choose another directory`,
    );
  }
}

/** ssh expands %-tokens in IdentityFile, UserKnownHostsFile and ControlPath. */
function escapeTokens(path: string): string {
  return path.replace(/%/g, '%%');
}

/** The state dir if a socket path fits there, else a private directory under the temp dir (or /tmp, as macOS's temp dir is long). */
async function controlSocketDir(sshDir: string, stateDir: string): Promise<string> {
  if (Buffer.byteLength(sshDir) + CONTROL_PATH_SUFFIX_LENGTH <= SOCKET_PATH_MAX) return sshDir;
  const uid = process.getuid?.() ?? 0;
  const name = `nixfarm-${uid}-${createHash('sha256').update(stateDir).digest('hex').slice(0, 12)}`;
  for (const base of [tmpdir(), '/tmp']) {
    const dir = join(base, name);
    if (Buffer.byteLength(dir) + CONTROL_PATH_SUFFIX_LENGTH > SOCKET_PATH_MAX) continue;
    await mkdir(dir, { mode: 0o700 }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
    // Another local user must not be able to plant a socket we would talk to.
    const status = await lstat(dir);
    if (!status.isDirectory() || (process.getuid !== undefined && status.uid !== uid) || (status.mode & 0o077) !== 0) {
      throw new ValidationError(`${dir} exists but is not a private directory of this user; remove it or use a shorter state dir`);
    }
    return dir;
  }
  throw new ValidationError(`no directory short enough for an ssh control socket (state dir ${stateDir}); use a shorter state dir`);
}
