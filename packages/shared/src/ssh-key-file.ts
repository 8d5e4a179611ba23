import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import { createFileExclusive } from './atomic-file.js';
import type { NixfarmError } from './errors.js';
import { formatSshPublicKey, parseSshPublicKey } from './ssh-public-key.js';

export interface SshKeyFile {
  /** OpenSSH private key text */
  privateKey: string;
  privateKeyPath: string;
  /** "ssh-ed25519 AAAA... comment" */
  publicKeyLine: string;
  /** SHA256:..., as `ssh-keygen -lf` prints it */
  fingerprint: string;
}

/** Builds the caller's own error for a key file it cannot use (HostKeyFileError, WorkerKeyFileError). */
export type KeyFileErrorFactory = (path: string, reason: string, cause?: unknown) => NixfarmError;

/**
 * An ed25519 key in OpenSSH format at `path`: created once, then kept, since
 * others pin or authorise it. An unreadable key is an error, never a reason to
 * make a new one. The `.pub` beside it is derived, rewritten when missing or stale.
 */
export async function loadOrCreateSshKey(path: string, comment: string, fileError: KeyFileErrorFactory): Promise<SshKeyFile> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  let text = await readIfExists(path, fileError);
  if (text === undefined) text = await createExclusive(path, generateEd25519(comment).private, fileError);
  // ssh and sshd refuse keys others can read; the file is ours, so repair it rather than fail.
  if (((await stat(path)).mode & 0o077) !== 0) await chmod(path, 0o600);

  const parsed = parsePrivateKey(path, text, fileError);
  let key;
  try {
    key = parseSshPublicKey(`${parsed.type} ${parsed.getPublicSSH().toString('base64')} ${parsed.comment}`);
  } catch (error) {
    throw fileError(path, `${(error as Error).message}; move it away to have a new key made`, error);
  }
  const publicKeyLine = formatSshPublicKey(key);
  const pubPath = `${path}.pub`;
  if ((await readIfExists(pubPath, fileError))?.trim() !== publicKeyLine) await writeFile(pubPath, `${publicKeyLine}\n`, { mode: 0o644 });
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

function parsePrivateKey(path: string, text: string, fileError: KeyFileErrorFactory): ParsedKey {
  const result = ssh2.utils.parseKey(text);
  const parsed = Array.isArray(result) ? result[0] : result;
  if (parsed === undefined || parsed instanceof Error) {
    throw fileError(path, `not an OpenSSH private key (${parsed instanceof Error ? parsed.message : 'empty'})`);
  }
  if (!parsed.isPrivateKey()) throw fileError(path, 'holds a public key, not a private key');
  return parsed;
}

async function readIfExists(path: string, fileError: KeyFileErrorFactory): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fileError(path, 'unreadable', error);
  }
}

/** Never half a key, and two processes starting at once agree on one key: the one that created it. */
async function createExclusive(path: string, text: string, fileError: KeyFileErrorFactory): Promise<string> {
  let created: boolean;
  try {
    created = await createFileExclusive(path, text, 0o600);
  } catch (error) {
    throw fileError(path, 'cannot be created', error);
  }
  return created ? text : readFile(path, 'utf8');
}
