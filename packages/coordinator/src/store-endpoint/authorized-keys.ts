import { appendFile, mkdir, open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import {
  InvalidSshPublicKeyError,
  NixfarmError,
  formatSshPublicKey,
  parseSshPublicKey,
  reportKeyOf,
  writeFileAtomic,
  type Logger,
  type ReportKey,
  type SshPublicKey,
} from '@nixfarm/shared';

const AUTHORIZED_KEYS_FILE = 'authorized_keys';

export interface AuthorizedKey extends SshPublicKey {
  /** 1-based line in the file, for messages */
  lineNumber: number;
  /** ssh2's form of the key, which verifies signatures */
  verifier: ParsedKey;
  /** the same key, ready to verify signed worker reports */
  reportKey: ReportKey;
}

export interface AuthorizedKeysOptions {
  /** warnings about unusable lines go here; silent without one */
  logger?: Logger;
}

class AuthorizedKeysFileError extends NixfarmError {
  constructor(path: string, reason: string, cause?: unknown) {
    super('invalid-authorized-keys-file', `cannot use ${path}: ${reason}`, { retryable: false, cause });
  }
}

/**
 * The workers' keys allowed into the coordinator's store, in OpenSSH's
 * authorized_keys format so operators can edit it by hand. The file is
 * checked on every authentication (one stat; re-parsed only when it
 * changed), so authorising a worker never needs a restart.
 */
export class AuthorizedKeys {
  readonly path: string;
  private readonly stateDir: string;
  private readonly logger: Logger | undefined;
  private cache: { version: string; keys: readonly AuthorizedKey[]; unusable?: boolean } | undefined;
  /** Serialises add() within this process; a single O_APPEND write keeps processes apart. */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(stateDir: string, options: AuthorizedKeysOptions = {}) {
    this.stateDir = stateDir;
    this.path = join(stateDir, AUTHORIZED_KEYS_FILE);
    this.logger = options.logger;
  }

  /** The usable keys as the file says now; unusable lines are skipped with a warning, never half-trusted. */
  async keys(): Promise<readonly AuthorizedKey[]> {
    let status;
    try {
      status = await stat(this.path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new AuthorizedKeysFileError(this.path, 'cannot stat', error);
    }
    const version = `${status.ino}:${status.size}:${status.mtimeMs}:${status.ctimeMs}`;
    if (this.cache?.version === version) return this.cache.keys;

    // Like sshd's StrictModes: a file others may write could authorise anyone.
    if ((status.mode & 0o022) !== 0) {
      this.logger?.error(
        { path: this.path, mode: (status.mode & 0o777).toString(8) },
        'authorized_keys is writable by group or others; no key is accepted until it is chmod 600',
      );
      this.cache = { version, keys: [], unusable: true };
      return [];
    }
    const text = await readFile(this.path, 'utf8');
    this.cache = { version, keys: this.parse(text) };
    return this.cache.keys;
  }

  /** Whether the file as last read was refused whole (others may write it): no key counts, yet none was revoked. */
  get unusable(): boolean {
    return this.cache?.unusable === true;
  }

  /** The authorised key with this blob, if any. */
  async find(blob: Buffer): Promise<AuthorizedKey | undefined> {
    return (await this.keys()).find((key) => key.blob.equals(blob));
  }

  /** Validates and appends a key unless it is there already (comments aside). Returns its fingerprint. */
  async add(publicKeyLine: string): Promise<string> {
    const key = parseSshPublicKey(publicKeyLine);
    toVerifier(key);
    const result = this.writes.then(async () => {
      await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
      if ((await this.keys()).some((existing) => existing.blob.equals(key.blob))) return key.fingerprint;
      const prefix = (await this.endsWithoutNewline()) ? '\n' : '';
      await appendFile(this.path, `${prefix}${formatSshPublicKey(key)}\n`, { mode: 0o600 });
      this.logger?.info({ fingerprint: key.fingerprint, path: this.path }, 'authorised worker key');
      return key.fingerprint;
    });
    this.writes = result.catch(() => undefined);
    return result;
  }

  /**
   * Removes every line holding this key (`SHA256:...` fingerprint, or a public key line), keeping the
   * rest of the file as it is. Returns the fingerprint removed, or undefined when the key is not there.
   * A running coordinator notices (worker-revocation.ts) and the endpoint refuses the key from its next login.
   */
  async remove(keyOrFingerprint: string): Promise<string | undefined> {
    const fingerprint = /^SHA256:/.test(keyOrFingerprint.trim()) ? keyOrFingerprint.trim() : parseSshPublicKey(keyOrFingerprint).fingerprint;
    const result = this.writes.then(async () => {
      let text;
      try {
        text = await readFile(this.path, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new AuthorizedKeysFileError(this.path, 'cannot read', error);
      }
      const lines = text.split('\n');
      const kept = lines.filter((raw) => {
        const line = raw.trim();
        if (line.length === 0 || line.startsWith('#')) return true;
        try {
          return parseSshPublicKey(line).fingerprint !== fingerprint;
        } catch {
          return true;
        }
      });
      if (kept.length === lines.length) return undefined;
      await writeFileAtomic(this.path, kept.join('\n'), 0o600);
      this.logger?.info({ fingerprint, path: this.path }, 'revoked worker key');
      return fingerprint;
    });
    this.writes = result.catch(() => undefined);
    return result;
  }

  private parse(text: string): AuthorizedKey[] {
    const keys: AuthorizedKey[] = [];
    for (const [index, raw] of text.split('\n').entries()) {
      const line = raw.trim();
      if (line.length === 0 || line.startsWith('#')) continue;
      try {
        const key = parseSshPublicKey(line);
        const verifier = toVerifier(key);
        keys.push({ ...key, lineNumber: index + 1, verifier, reportKey: reportKeyOf(verifier) });
      } catch (error) {
        this.logger?.warn({ path: this.path, line: index + 1, reason: (error as Error).message }, 'skipping an unusable authorized_keys line');
      }
    }
    return keys;
  }

  private async endsWithoutNewline(): Promise<boolean> {
    let handle;
    try {
      handle = await open(this.path, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw error;
    }
    try {
      const { size } = await handle.stat();
      if (size === 0) return false;
      const last = Buffer.alloc(1);
      await handle.read(last, 0, 1, size - 1);
      return last[0] !== 0x0a;
    } finally {
      await handle.close();
    }
  }
}

function toVerifier(key: SshPublicKey): ParsedKey {
  const parsed = ssh2.utils.parseKey(key.keyText);
  const verifier = Array.isArray(parsed) ? parsed[0] : parsed;
  if (verifier === undefined || verifier instanceof Error) {
    throw new InvalidSshPublicKeyError(`ssh2 cannot use it (${verifier instanceof Error ? verifier.message : 'empty'})`);
  }
  return verifier;
}
