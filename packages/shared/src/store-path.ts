import { InvalidStorePathError } from './errors.js';
import { NIX_BASE32_ALPHABET, NIX_BASE32_CHAR } from './nix-base32.js';

/** The store directory every machine of a farm shares; Nix store paths are only portable between equal store dirs. */
export const STORE_DIR = '/nix/store';

const HASH_LENGTH = 32;
const NAME_MAX = 211;
const NAME_RE = /^[A-Za-z0-9+\-._?=]+$/;
const HASH_RE = new RegExp(`^${NIX_BASE32_CHAR}{${HASH_LENGTH}}$`);

export interface StorePathParts {
  /** The full path, e.g. /nix/store/<hash>-hello-2.12 */
  path: string;
  /** The 32-character hash part, unique per path. */
  hash: string;
  /** Everything after the hash and dash. */
  name: string;
}

/** Why a string is not a store path, or undefined if it is one. Follows Nix's own grammar (StorePath::StorePath, checkName). */
export function storePathProblem(path: string): string | undefined {
  if (typeof path !== 'string') return 'not a string';
  const prefix = `${STORE_DIR}/`;
  if (!path.startsWith(prefix)) return `must start with ${prefix}`;
  const base = path.slice(prefix.length);
  if (base.includes('/')) return 'must name a top-level store object (no further slashes)';
  if (base.length < HASH_LENGTH + 2) return 'too short for a hash and a name';
  const hash = base.slice(0, HASH_LENGTH);
  if (!HASH_RE.test(hash)) return `hash part must be ${HASH_LENGTH} characters of Nix base-32`;
  if (base[HASH_LENGTH] !== '-') return 'a dash must follow the hash part';
  const name = base.slice(HASH_LENGTH + 1);
  if (name.length > NAME_MAX) return `name longer than ${NAME_MAX} characters`;
  if (!NAME_RE.test(name)) return 'name may only contain letters, digits and + - . _ ? =';
  if (name.startsWith('.')) return 'name may not start with a dot';
  return undefined;
}

export function isStorePath(path: string): boolean {
  return storePathProblem(path) === undefined;
}

/** Returns the path unchanged, or throws InvalidStorePathError naming it. Call before handing a path to any command. */
export function assertStorePath(path: string): string {
  const problem = storePathProblem(path);
  if (problem !== undefined) throw new InvalidStorePathError(path, problem);
  return path;
}

export function parseStorePath(path: string): StorePathParts {
  assertStorePath(path);
  const base = path.slice(STORE_DIR.length + 1);
  return { path, hash: base.slice(0, HASH_LENGTH), name: base.slice(HASH_LENGTH + 1) };
}

export function hashPart(path: string): string {
  return parseStorePath(path).hash;
}

export function isDerivationPath(path: string): boolean {
  return isStorePath(path) && path.endsWith('.drv');
}

export function assertDerivationPath(path: string): string {
  assertStorePath(path);
  if (!path.endsWith('.drv')) throw new InvalidStorePathError(path, 'a derivation path must end in .drv');
  return path;
}

/** `hello-2.12.drv` -> `hello-2.12` */
export function derivationName(drvPath: string): string {
  return parseStorePath(drvPath).name.replace(/\.drv$/, '');
}

/** True for a 1 to 32 character prefix of a hash part: how people abbreviate store paths. */
export function isHashPrefix(text: string): boolean {
  return text.length > 0 && text.length <= HASH_LENGTH && [...text].every((c) => NIX_BASE32_ALPHABET.includes(c));
}
