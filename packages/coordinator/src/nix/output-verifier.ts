/**
 * The one question the scheduler asks Nix after evaluation: which of these
 * store paths are not valid in the coordinator's store. A worker's success and
 * a run's results count only when their outputs are valid here. Production
 * passes CoordinatorNix; the narrow type keeps the scheduler testable and
 * benchmarkable without a store.
 */
export interface OutputVerifier {
  invalidPaths(paths: readonly string[]): Promise<Set<string>>;
  /**
   * The NAR hash of each of `paths` that is valid in the coordinator's store
   * (an invalid path is absent): the same answer as invalidPaths plus what
   * the store holds, asked instead of it when a report carries NAR hashes.
   * Absent: reported hashes are not checked.
   */
  narHashes?(paths: readonly string[]): Promise<Map<string, string>>;
}

/** Nix's base-32 alphabet (no e, o, t, u). */
const BASE32 = '0123456789abcdfghijklmnpqrsvwxyz';

/** Bytes in Nix's base-32, as Nix prints them (its own bit order, not RFC 4648). */
function nixBase32(bytes: Buffer): string {
  const length = Math.ceil((bytes.length * 8) / 5);
  let out = '';
  for (let n = length - 1; n >= 0; n--) {
    const b = n * 5;
    const i = Math.floor(b / 8);
    const j = b % 8;
    const c = (bytes[i]! >> j) | (i + 1 < bytes.length ? bytes[i + 1]! << (8 - j) : 0);
    out += BASE32[c & 0x1f];
  }
  return out;
}

/**
 * A NAR hash in the form Nix's serve protocol sends ("sha256:" and base-32),
 * whichever form it came in (the report schema also allows 64 hex digits).
 */
export function canonicalNarHash(hash: string): string {
  const hex = /^sha256:([0-9a-f]{64})$/.exec(hash)?.[1];
  return hex === undefined ? hash : `sha256:${nixBase32(Buffer.from(hex, 'hex'))}`;
}
