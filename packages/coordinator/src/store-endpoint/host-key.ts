import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { NixfarmError, loadOrCreateSshKey } from '@nixfarm/shared';

const HOST_KEY_FILE = 'ssh_host_ed25519_key';

export interface HostKey {
  /** OpenSSH private key text, as ssh2's Server takes it in `hostKeys` */
  privateKey: string;
  privateKeyPath: string;
  /** "ssh-ed25519 AAAA... comment": what workers pin */
  publicKeyLine: string;
  /** SHA256:..., as `ssh-keygen -lf` prints it */
  fingerprint: string;
}

class HostKeyFileError extends NixfarmError {
  constructor(path: string, reason: string, cause?: unknown) {
    super('invalid-host-key-file', `cannot use the coordinator host key ${path}: ${reason}`, { retryable: false, cause });
  }
}

/**
 * The coordinator's SSH identity: created once, then kept, because every
 * worker pins it. Losing it means re-pinning every worker, so an unreadable
 * key is an error, never a reason to make a new one.
 */
export async function loadOrCreateHostKey(stateDir: string): Promise<HostKey> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  return loadOrCreateSshKey(
    join(stateDir, HOST_KEY_FILE),
    `nixfarm-coordinator@${hostname()}`,
    (path, reason, cause) => new HostKeyFileError(path, reason, cause),
  );
}
