import type { ByteTally } from '@nixfarm/build';
import { InfrastructureError, type ExporterStart, type Logger, type ServePool } from '@nixfarm/shared';

export interface StoreCopierOptions {
  /** sessions with this worker's store */
  local: ServePool;
  /** sessions with the coordinator's store */
  coordinator: ServePool;
  logger: Logger;
  /**
   * Starts `nix-store --export` on this worker's store writing straight into a
   * coordinator session's input: copies out then bypass this process (without
   * it, the export stream is relayed from a local serve session)
   */
  exporter?: ExporterStart;
}

/** A path an input needs that the coordinator does not have: the coordinator's fault, never the builder's. */
class MissingInputError extends InfrastructureError {
  constructor(readonly missing: string[]) {
    super('coordinator-missing-input', `coordinator error: inputs missing from the coordinator's store: ${missing.join(' ')}`);
  }
}

/**
 * Moves store paths between the coordinator's store and this worker's over
 * long-lived serve sessions: one round trip to learn what is missing, then
 * the whole set in one export/import stream. Copies running at once never
 * fetch the same path twice: a path already on its way is waited for.
 */
export class StoreCopier {
  private readonly arriving = new Map<string, Promise<void>>();

  constructor(private readonly options: StoreCopierOptions) {}

  /**
   * Makes `paths` and their closures valid locally. Returns how many paths were
   * copied; their bytes go to `tally` (not those of paths another copy brought).
   */
  async copyIn(paths: readonly string[], tally?: ByteTally): Promise<number> {
    const { local, coordinator } = this.options;
    if (paths.length === 0) return 0;
    const wanted = await local.use(async (l) => {
      const valid = await l.connection.queryValidPaths(paths);
      return paths.filter((p) => !valid.has(p));
    });
    if (wanted.length === 0) return 0;
    return coordinator.use(async (remote) => {
      const there = await remote.connection.queryValidPaths(wanted);
      const absent = wanted.filter((p) => !there.has(p));
      if (absent.length > 0) throw new MissingInputError(absent);
      const closure = await remote.connection.queryClosure(wanted);
      return local.use(async (l) => {
        const valid = await l.connection.queryValidPaths(closure);
        const missing = closure.filter((p) => !valid.has(p));
        const elsewhere = missing.filter((p) => this.arriving.has(p)).map((p) => this.arriving.get(p)!);
        const mine = missing.filter((p) => !this.arriving.has(p));
        if (mine.length > 0) {
          const copy = l.connection.importFrom(remote.connection, mine).then((bytes) => {
            if (tally !== undefined) tally.bytes += bytes;
          });
          const settled = copy.then(
            () => undefined,
            () => undefined,
          );
          for (const p of mine) this.arriving.set(p, settled);
          try {
            await copy;
          } finally {
            for (const p of mine) if (this.arriving.get(p) === settled) this.arriving.delete(p);
          }
        }
        await Promise.all(elsewhere);
        if (elsewhere.length > 0) {
          // another copy may have failed: whatever is still missing is copied now, on this session
          const still = await l.connection.queryValidPaths(missing);
          const retry = missing.filter((p) => !still.has(p));
          if (retry.length > 0) {
            const bytes = await l.connection.importFrom(remote.connection, retry);
            if (tally !== undefined) tally.bytes += bytes;
          }
        }
        return mine.length;
      });
    });
  }

  /** Makes `paths` and their closures valid in the coordinator's store. Returns how many paths were copied; their bytes go to `tally`. */
  async copyOut(paths: readonly string[], tally?: ByteTally): Promise<number> {
    const { local, coordinator } = this.options;
    if (paths.length === 0) return 0;
    return local.use(async (l) => {
      const closure = await l.connection.queryClosure(paths);
      return coordinator.use(async (remote) => {
        const there = await remote.connection.queryValidPaths(closure);
        const missing = closure.filter((p) => !there.has(p));
        const { exporter } = this.options;
        if (exporter === undefined || missing.length === 0) {
          const bytes = await remote.connection.importFrom(l.connection, missing);
          if (tally !== undefined) tally.bytes += bytes;
          return missing.length;
        }
        // the stream's size is not seen here: its NARs' sizes stand for it
        const infos = await l.connection.queryPathInfos(missing);
        await remote.connection.importFromProcess(missing, exporter);
        if (tally !== undefined) for (const info of infos.values()) tally.bytes += info.narSize;
        return missing.length;
      });
    });
  }

  /** The contents of a file in the coordinator's store (a .drv). */
  readCoordinatorFile(path: string): Promise<Buffer> {
    return this.options.coordinator.use((remote) => remote.connection.readFile(path));
  }
}
