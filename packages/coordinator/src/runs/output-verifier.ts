/**
 * The one question the scheduler asks Nix after evaluation: which of these
 * store paths are not valid in the coordinator's store. A worker's success and
 * a run's results count only when their outputs are valid here. Production
 * passes CoordinatorNix; the narrow type keeps the scheduler testable and
 * benchmarkable without a store.
 */
export interface OutputVerifier {
  invalidPaths(paths: readonly string[]): Promise<Set<string>>;
}
