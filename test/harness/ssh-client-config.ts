import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface SshHost {
  /** the name Nix and ssh use (`ssh://<alias>`) */
  alias: string;
  port: number;
  /** `ssh-ed25519 AAAA...`: pinned, never learnt on first use */
  hostPublicKey: string;
}

/**
 * The client side of SSH to simulated machines: a key pair made for this
 * session, a known_hosts file holding exactly the machines' host keys, and an
 * ssh config that maps each alias to its 127.0.0.1 port with
 * StrictHostKeyChecking=yes. Nix gets it as `NIX_SSHOPTS=-F <config>`.
 */
export class SshClientConfig {
  readonly dir: string;
  readonly keyFile: string;
  readonly publicKey: string;
  readonly configFile: string;
  readonly knownHostsFile: string;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.dir = dir;
    this.keyFile = join(dir, 'id_ed25519');
    this.configFile = join(dir, 'ssh_config');
    this.knownHostsFile = join(dir, 'known_hosts');
    const keygen = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'nixfarm-bench', '-f', this.keyFile], { encoding: 'utf8' });
    if (keygen.status !== 0) throw new Error(`ssh-keygen failed (${keygen.status}): ${keygen.stderr}`);
    this.publicKey = readFileSync(`${this.keyFile}.pub`, 'utf8').trim();
  }

  /** Writes known_hosts and the config for these hosts (replacing earlier ones). */
  writeHosts(hosts: readonly SshHost[]): void {
    for (const h of hosts) {
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(h.alias)) throw new Error(`ssh alias ${JSON.stringify(h.alias)}: use letters, digits and _ . -`);
      if (!/^ssh-ed25519 [A-Za-z0-9+/=]+$/.test(h.hostPublicKey)) throw new Error(`host key of ${h.alias} is not an ed25519 public key`);
    }
    // HostKeyAlias: the key is looked up by the alias, not by 127.0.0.1:port (ports get reused across sessions)
    writeFileSync(this.knownHostsFile, hosts.map((h) => `${h.alias} ${h.hostPublicKey}\n`).join(''));
    const blocks = hosts.map((h) =>
      [
        `Host ${h.alias}`,
        '  HostName 127.0.0.1',
        `  Port ${h.port}`,
        '  User root',
        `  HostKeyAlias ${h.alias}`,
        `  IdentityFile ${this.keyFile}`,
        '  IdentitiesOnly yes',
        `  UserKnownHostsFile ${this.knownHostsFile}`,
        '  GlobalKnownHostsFile /dev/null',
        '  StrictHostKeyChecking yes',
        '  UpdateHostKeys no',
        '  BatchMode yes',
        '  ControlMaster no',
        '  ControlPath none',
        '  LogLevel ERROR',
        '',
      ].join('\n'),
    );
    writeFileSync(this.configFile, blocks.join('\n'));
  }

  /** The value of NIX_SSHOPTS (Nix splits it on spaces: the path has none). */
  nixSshOpts(): string {
    if (/\s/.test(this.configFile)) throw new Error(`ssh config path has whitespace: ${this.configFile}`);
    return `-F ${this.configFile}`;
  }
}
