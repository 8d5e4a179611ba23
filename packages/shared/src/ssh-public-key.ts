import { createHash } from 'node:crypto';
import { NixfarmError } from './errors.js';

/**
 * OpenSSH public keys as one line of text ("ssh-ed25519 AAAA... comment"),
 * the form in which keys travel between machines: .pub files,
 * authorized_keys, known_hosts, and `nixfarm authorize KEY`.
 */

/** The key types nixfarm accepts: what both OpenSSH and ssh2 can verify. DSA and security-key types are refused. */
export const SSH_KEY_TYPES = ['ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521'] as const;
export type SshKeyType = (typeof SSH_KEY_TYPES)[number];

/** Below this, RSA keys are refused (OpenSSH's own minimum since 8.x is 1024; 2048 is the sane floor). */
const RSA_MIN_BITS = 2048;
/** Uncompressed EC point lengths: 0x04 || X || Y. */
const EC_POINT_LENGTH: Record<string, number> = { nistp256: 65, nistp384: 97, nistp521: 133 };

export interface SshPublicKey {
  type: SshKeyType;
  /** the key blob in SSH wire format: what is signed over, fingerprinted and sent in the protocol */
  blob: Buffer;
  /** text after the key; may be empty or contain spaces */
  comment: string;
  /** OpenSSH's fingerprint, as `ssh-keygen -lf` prints it: SHA256:<base64 without padding> */
  fingerprint: string;
  /** "<type> <base64>" without the comment: the identity of the key */
  keyText: string;
}

export class InvalidSshPublicKeyError extends NixfarmError {
  constructor(reason: string) {
    super('invalid-ssh-public-key', `not a usable OpenSSH public key: ${reason}`, { retryable: false });
  }
}

/** OpenSSH's fingerprint of a key blob. */
export function sshKeyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Parses and validates one public key line; throws InvalidSshPublicKeyError saying what is wrong. */
export function parseSshPublicKey(line: string): SshPublicKey {
  if (typeof line !== 'string') throw new InvalidSshPublicKeyError('not a string');
  const trimmed = line.trim();
  if (trimmed.length === 0) throw new InvalidSshPublicKeyError('empty');
  if (/[\r\n\0]/.test(trimmed)) throw new InvalidSshPublicKeyError('must be a single line');
  const match = /^(\S+)\s+(\S+)(?:\s+(.*))?$/.exec(trimmed);
  if (match === null) throw new InvalidSshPublicKeyError('expected "<type> <base64 key> [comment]"');
  const [, type = '', base64 = '', comment = ''] = match;
  if (!isSshKeyType(type)) {
    // authorized_keys options ("command=... ssh-ed25519 AAAA") land here too: nixfarm cannot honour them, so refuses them.
    const hint = SSH_KEY_TYPES.some((t) => trimmed.includes(` ${t} `)) ? ' (key options before the key type are not supported)' : '';
    throw new InvalidSshPublicKeyError(`unsupported key type ${JSON.stringify(type.slice(0, 40))}${hint}; use ssh-ed25519`);
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64) || base64.length % 4 !== 0) throw new InvalidSshPublicKeyError('key data is not base64');
  const blob = Buffer.from(base64, 'base64');
  const key = sshPublicKeyFromBlob(blob, comment.trim());
  if (key.type !== type) throw new InvalidSshPublicKeyError(`the line says ${type} but the key data is ${key.type}`);
  return key;
}

/** Validates a key blob as received in the SSH protocol and describes it. */
export function sshPublicKeyFromBlob(blob: Buffer, comment = ''): SshPublicKey {
  const reader = new SshWireReader(blob);
  const type = reader.string().toString('latin1');
  if (!isSshKeyType(type)) throw new InvalidSshPublicKeyError(`unsupported key type ${JSON.stringify(type.slice(0, 40))}; use ssh-ed25519`);
  switch (type) {
    case 'ssh-ed25519':
      if (reader.string().length !== 32) throw new InvalidSshPublicKeyError('an ed25519 key is 32 bytes');
      break;
    case 'ssh-rsa': {
      reader.string(); // public exponent
      const modulus = reader.string();
      const bits = (modulus.length - (modulus[0] === 0 ? 1 : 0)) * 8;
      if (bits < RSA_MIN_BITS) throw new InvalidSshPublicKeyError(`RSA keys need at least ${RSA_MIN_BITS} bits`);
      break;
    }
    default: {
      const curve = reader.string().toString('latin1');
      if (`ecdsa-sha2-${curve}` !== type) throw new InvalidSshPublicKeyError(`curve ${curve} does not match ${type}`);
      const point = reader.string();
      if (point.length !== EC_POINT_LENGTH[curve] || point[0] !== 0x04) throw new InvalidSshPublicKeyError('malformed EC point');
    }
  }
  if (!reader.atEnd()) throw new InvalidSshPublicKeyError('trailing bytes after the key');
  const copy = Buffer.from(blob);
  return { type, blob: copy, comment, fingerprint: sshKeyFingerprint(copy), keyText: `${type} ${copy.toString('base64')}` };
}

/** The canonical line, "<type> <base64> [comment]", as ssh-keygen writes it. */
export function formatSshPublicKey(key: Pick<SshPublicKey, 'keyText' | 'comment'>): string {
  return key.comment.length > 0 ? `${key.keyText} ${key.comment}` : key.keyText;
}

function isSshKeyType(type: string): type is SshKeyType {
  return (SSH_KEY_TYPES as readonly string[]).includes(type);
}

/** Reads RFC 4251 `string`s (uint32 length + bytes) without ever reading past the end. */
class SshWireReader {
  private offset = 0;
  constructor(private readonly buffer: Buffer) {}

  string(): Buffer {
    if (this.offset + 4 > this.buffer.length) throw new InvalidSshPublicKeyError('key data is truncated');
    const length = this.buffer.readUInt32BE(this.offset);
    const start = this.offset + 4;
    if (length > this.buffer.length - start) throw new InvalidSshPublicKeyError('key data is truncated');
    this.offset = start + length;
    return this.buffer.subarray(start, this.offset);
  }

  atEnd(): boolean {
    return this.offset === this.buffer.length;
  }
}
