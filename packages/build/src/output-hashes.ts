import type { ServePool } from '@nixfarm/shared';

/** NAR hashes of store paths, as the store that holds them recorded them: path -> "sha256:<base-32>". */
export type OutputHashes = (paths: readonly string[]) => Promise<Record<string, string>>;

/**
 * Reads the NAR hashes of built outputs from this worker's own store (one
 * QueryPathInfos exchange). They go into the success report, so the
 * coordinator can tell a reproducible double build from a divergent one.
 * A path the store does not have, or a server too old to send hashes, is
 * simply left out.
 */
export function narHashesIn(store: ServePool): OutputHashes {
  return async (paths) => {
    if (paths.length === 0) return {};
    const infos = await store.use((session) => session.connection.queryPathInfos(paths));
    const out: Record<string, string> = {};
    for (const [path, info] of infos) if (info.narHash !== undefined) out[path] = info.narHash;
    return out;
  };
}
