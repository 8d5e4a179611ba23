import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { NixfarmError, createFileExclusive, readPrivateFile } from '@nixfarm/shared';

/** The key file the coordinator makes in its state dir when no --signing-key is given. */
const SIGNING_KEY_FILE = 'signing-key';

/** How an operator makes a key of their own, in messages. */
const MAKE_ONE = 'nix-store --generate-binary-cache-key NAME SECRET-FILE PUBLIC-FILE';

/** A secret key as `nix-store --generate-binary-cache-key` writes it: name, colon, base64 of the 64-byte Ed25519 secret (seed and public half). */
const SECRET_KEY_PATTERN = /^([^\s:]+):([A-Za-z0-9+/]+={0,2})$/;

/** The DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows it. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export interface SigningKey {
  /** the key's name, as it appears before the colon in signatures and in trusted-public-keys */
  name: string;
  /** the secret key file: what `nix store sign --key-file` reads; never leaves the coordinator */
  secretKeyFile: string;
  /** `name:base64`, the form nix.conf's trusted-public-keys takes */
  publicKey: string;
}

/** A signing key file the coordinator will not use: missing, unreadable, open to group or others, or not a Nix secret key. */
class SigningKeyFileError extends NixfarmError {
  constructor(file: string, reason: string, cause?: unknown) {
    super('invalid-signing-key-file', `cannot use the signing key ${file}: ${reason}`, { retryable: false, cause });
  }
}

export function defaultSigningKeyPath(stateDir: string): string {
  return path.join(stateDir, SIGNING_KEY_FILE);
}

/** A fresh key in Nix's secret key format, named after this machine (the "-1" leaves room for a rotated key). */
function newSecretKey(): string {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const seed = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
  const pub = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
  const name = `${hostname().replace(/[\s:]/g, '-')}-nixfarm-1`;
  return `${name}:${Buffer.concat([seed, pub]).toString('base64')}\n`;
}

/**
 * Reads a signing key, refusing one group or others may read or write (a
 * leaked key lets anyone forge the farm's outputs, as sshd refuses loose
 * key files) and one that is not a Nix secret key: its public half must be
 * the one its seed gives, so a truncated or edited file is caught here, not
 * by a laptop refusing every path.
 */
export async function readSigningKey(file: string): Promise<SigningKey> {
  const text = await readPrivateFile(file, (reason, cause) => new SigningKeyFileError(file, reason, cause), { what: 'secret key file' });
  if (text === undefined)
    throw new SigningKeyFileError(file, `it does not exist; make one with \`${MAKE_ONE}\`, or leave out --signing-key to have one made in the state dir`);
  const malformed = `it is not a Nix secret key (NAME:BASE64 of 64 bytes, as \`${MAKE_ONE}\` writes); give the secret key file, not the public one`;
  const match = SECRET_KEY_PATTERN.exec(text.trim());
  if (match === null) throw new SigningKeyFileError(file, malformed);
  const name = match[1]!;
  const bytes = Buffer.from(match[2]!, 'base64');
  if (bytes.length !== 64) throw new SigningKeyFileError(file, malformed);
  let derived: Buffer;
  try {
    const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, bytes.subarray(0, 32)]), format: 'der', type: 'pkcs8' });
    derived = Buffer.from(createPublicKey(privateKey).export({ format: 'jwk' }).x!, 'base64url');
  } catch (error) {
    throw new SigningKeyFileError(file, malformed, error);
  }
  if (!derived.equals(bytes.subarray(32))) throw new SigningKeyFileError(file, `${malformed}: its public half does not belong to its secret half`);
  return { name, secretKeyFile: file, publicKey: `${name}:${derived.toString('base64')}` };
}

/**
 * The coordinator's signing key: the operator's file when given (never
 * replaced), else <stateDir>/signing-key, made once at first start and then
 * kept, because every machine that trusts the farm pins its public half.
 */
export async function loadOrCreateSigningKey(stateDir: string, file?: string): Promise<SigningKey> {
  if (file !== undefined) return readSigningKey(path.resolve(file));
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const own = defaultSigningKeyPath(stateDir);
  try {
    // Of two coordinators starting at once on one state dir, one makes the key and both read that one.
    await createFileExclusive(own, newSecretKey(), 0o600);
  } catch (error) {
    throw new SigningKeyFileError(own, 'cannot create it', error);
  }
  return readSigningKey(own);
}
