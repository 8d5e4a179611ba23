import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import { NixfarmError, formatSshPublicKey, parseSshPublicKey } from '@nixfarm/shared';

export const HOST_KEY_FILE = 'ssh_host_ed25519_key';

export interface HostKey {
  /** OpenSSH private key text, as ssh2's Server takes it in `hostKeys` */
  privateKey: string;
  privateKeyPath: string;
  /** "ssh-ed25519 AAAA... comment": what workers pin */
  publicKeyLine: string;
  /** SHA256:..., as `ssh-keygen -lf` prints it */
  fingerprint: string;
}

export class HostKeyFileError extends NixfarmError {
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
  const path = join(stateDir, HOST_KEY_FILE);
  let text = await readIfExists(path);
  if (text === undefined) {
    const pair = generateEd25519(`nixfarm-coordinator@${hostname()}`);
    text = await createExclusive(path, pair.private);
  }
  const status = await stat(path);
  // sshd refuses host keys others can read; be as strict, but repair our own file rather than fail.
  if ((status.mode & 0o077) !== 0) await chmod(path, 0o600);

  const parsed = parsePrivateKey(path, text);
  let key;
  try {
    key = parseSshPublicKey(`${parsed.type} ${parsed.getPublicSSH().toString('base64')} ${parsed.comment}`);
  } catch (error) {
    throw new HostKeyFileError(path, `${(error as Error).message}; move it away to have a new key made`, error);
  }
  const publicKeyLine = formatSshPublicKey(key);
  // The .pub file is derived, for operators: rewrite it when missing or stale.
  const pubPath = `${path}.pub`;
  const existingPub = await readIfExists(pubPath);
  if (existingPub?.trim() !== publicKeyLine) await writeFile(pubPath, `${publicKeyLine}\n`, { mode: 0o644 });
  return { privateKey: text, privateKeyPath: path, publicKeyLine, fingerprint: key.fingerprint };
}

/**
 * ssh2 1.17's generateKeyPairSync('ed25519') strips every leading zero byte of
 * the public key (it means to strip the DER BIT STRING's one padding byte), so
 * about one key in 256 comes out 31 bytes long: unusable by OpenSSH, and by
 * ssh2 itself. Generate until the key is well-formed.
 */
function generateEd25519(comment: string): { private: string; public: string } {
  for (let attempt = 0; attempt < 16; attempt += 1) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment });
    try {
      parseSshPublicKey(pair.public);
      return pair;
    } catch {
      // a truncated key: draw another
    }
  }
  throw new Error('ssh2 generated no well-formed ed25519 key in 16 attempts');
}

function parsePrivateKey(path: string, text: string): ParsedKey {
  const result = ssh2.utils.parseKey(text);
  const parsed = Array.isArray(result) ? result[0] : result;
  if (parsed === undefined || parsed instanceof Error) {
    throw new HostKeyFileError(path, `not an OpenSSH private key (${parsed instanceof Error ? parsed.message : 'empty'})`);
  }
  if (!parsed.isPrivateKey()) throw new HostKeyFileError(path, 'holds a public key, not a private key');
  return parsed;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new HostKeyFileError(path, 'unreadable', error);
  }
}

/** Write-then-link, so a crash never leaves half a key and two processes starting at once agree on one key. */
async function createExclusive(path: string, text: string): Promise<string> {
  const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, text, { mode: 0o600, flag: 'wx' });
  try {
    await link(temp, path);
    return text;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw new HostKeyFileError(path, 'cannot be created', error);
    return readFile(path, 'utf8');
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}
