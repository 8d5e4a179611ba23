import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { SimulatedMachine } from './simulated-machine.js';
import { sleep } from './poll.js';
import { logOutputTo } from './child-log.js';

const SSHD = '/usr/sbin/sshd';
const SSH_KEYGEN = 'ssh-keygen';

export interface SshBuilderMachineOptions {
  /** parent dir of the machine (see SimulatedMachine) */
  root: string;
  /** OpenSSH public key line allowed to log in as root */
  authorizedKey: string;
  /** more nix.conf lines for the machine's store (e.g. `system-features = big-producer`) */
  nixConfig?: readonly string[];
}

/**
 * A simulated machine that Nix's own remote builds (`--builders ssh://...`)
 * can use: a real OpenSSH sshd inside the machine's mount namespace, so that
 * the `nix-store --serve --write` it starts for each session sees only this
 * machine's /nix. It has its own host key and listens on its own port on
 * 127.0.0.1; only the given key may log in.
 *
 * sshd drops the client's environment and sessions do not inherit sshd's, so
 * the store's settings reach `nix-store --serve` through sshd's own SetEnv:
 * NIX_CONF_DIR points at a nix.conf of this machine (sandboxed, no
 * substituters, no build users: simulated machines share the host's uids,
 * and one store's cleanup of a build user would kill another's builder).
 */
export class SshBuilderMachine {
  readonly machine: SimulatedMachine;
  readonly port: number;
  /** `ssh-ed25519 AAAA...` (without comment): what clients pin */
  readonly hostPublicKey: string;
  readonly logFile: string;
  private sshd?: ChildProcess;

  private constructor(machine: SimulatedMachine, port: number, hostPublicKey: string) {
    this.machine = machine;
    this.port = port;
    this.hostPublicKey = hostPublicKey;
    this.logFile = join(machine.stateDir, 'sshd.log');
  }

  get name(): string {
    return this.machine.name;
  }

  static async start(name: string, options: SshBuilderMachineOptions): Promise<SshBuilderMachine> {
    if (!existsSync(SSHD)) throw new Error(`${SSHD} is missing: install Debian's openssh-server (scripts/ensure-machine.mjs does)`);
    const machine = new SimulatedMachine(name, { root: options.root, nixConfig: ['build-users-group ='] });
    try {
      const sshDir = join(machine.stateDir, 'sshd');
      const nixConfDir = join(machine.stateDir, 'nix-conf');
      mkdirSync(sshDir, { recursive: true });
      mkdirSync(nixConfDir, { recursive: true });
      const hostKey = join(sshDir, 'ssh_host_ed25519_key');
      await run(SSH_KEYGEN, ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}-host`, '-f', hostKey]);
      const hostPublicKey = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
      writeFileSync(join(sshDir, 'authorized_keys'), `${options.authorizedKey.trim()}\n`, { mode: 0o600 });
      writeFileSync(join(nixConfDir, 'nix.conf'), `${machine.nixConfigText(['sandbox = true', ...(options.nixConfig ?? [])])}\n`);
      // sshd refuses to start without its privilege separation dir
      mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
      const port = await freePort();
      const config = join(sshDir, 'sshd_config');
      writeFileSync(
        config,
        [
          'ListenAddress 127.0.0.1',
          `Port ${port}`,
          `HostKey ${hostKey}`,
          `AuthorizedKeysFile ${join(sshDir, 'authorized_keys')}`,
          'PidFile none',
          'PermitRootLogin prohibit-password',
          'PubkeyAuthentication yes',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          'UsePAM no',
          // the machine lives under /tmp (sticky, world-writable), which StrictModes rejects as an owner of authorized_keys
          'StrictModes no',
          'PermitTTY no',
          'AllowTcpForwarding no',
          'AllowAgentForwarding no',
          'X11Forwarding no',
          'PermitTunnel no',
          'MaxStartups 100:30:200',
          'MaxSessions 100',
          // HOME: sshd runs the command through root's shell, and Debian's bash sources $HOME/.bashrc for ssh commands;
          // the host's (pyenv init: a rehash lock that waits up to 60 s) must not run in every build's session
          `SetEnv HOME=${machine.homeDir} NIX_CONF_DIR=${nixConfDir} XDG_CONFIG_HOME=${join(machine.homeDir, '.config')} XDG_CACHE_HOME=${join(machine.homeDir, '.cache')}`,
          '',
        ].join('\n'),
      );
      await run(SSHD, ['-t', '-f', config]);
      const builder = new SshBuilderMachine(machine, port, hostPublicKey);
      builder.startSshd(config);
      await builder.waitListening();
      return builder;
    } catch (error) {
      await machine.destroy();
      throw error;
    }
  }

  private startSshd(config: string): void {
    // -D: stay in the foreground (in the machine's process group), -e: log to stderr
    const child = this.machine.spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    logOutputTo(child, this.logFile);
    this.sshd = child;
  }

  private async waitListening(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.sshd?.exitCode !== null && this.sshd?.exitCode !== undefined)
        throw new Error(`sshd of ${this.name} exited with ${this.sshd.exitCode}:\n${this.logTail()}`);
      if (await canConnect(this.port)) return;
      if (Date.now() > deadline) throw new Error(`sshd of ${this.name} not listening on ${this.port} after ${timeoutMs} ms:\n${this.logTail()}`);
      await sleep(50);
    }
  }

  logTail(lines = 30): string {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no sshd log)';
    }
  }

  /** Stops sshd and every session of it, and deletes the machine. */
  async destroy(): Promise<void> {
    await this.machine.destroy();
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function run(command: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} exited with ${code}:\n${stderr}`))));
  });
}
