import { nixBase32 } from '@nixfarm/shared';

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

/**
 * A NAR hash in the form Nix's serve protocol sends ("sha256:" and base-32),
 * whichever form it came in (the report schema also allows 64 hex digits).
 */
export function canonicalNarHash(hash: string): string {
  const hex = /^sha256:([0-9a-f]{64})$/.exec(hash)?.[1];
  return hex === undefined ? hash : `sha256:${nixBase32(Buffer.from(hex, 'hex'))}`;
}
