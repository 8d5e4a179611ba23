import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { assertDerivationPath, parseStorePath, writeFileAtomic } from '@nixfarm/shared';

export interface BuildLogStoreOptions {
  /** Nix's log directory (NIX_LOG_DIR, by default /nix/var/log/nix): logs go to <logDir>/drvs/<2 chars>/<rest> */
  logDir: string;
}

/** Where Nix keeps logs when NIX_LOG_DIR is not set. */
export const DEFAULT_NIX_LOG_DIR = '/nix/var/log/nix';

/**
 * Build logs as files in Nix's own layout, so `nix-store --read-log DRV` on
 * the coordinator shows them. Nix writes `<rest>.bz2`, but reads an
 * uncompressed `<rest>` first (LocalFSStore::getBuildLog), so the logs are
 * stored plain: no bzip2 needed, and they replace a local build's .bz2.
 */
export class BuildLogStore {
  constructor(private readonly options: BuildLogStoreOptions) {}

  get logDir(): string {
    return this.options.logDir;
  }

  /** The file of a derivation's log; the name comes only from a validated .drv basename. */
  pathFor(drvPath: string): string {
    assertDerivationPath(drvPath);
    const base = `${parseStorePath(drvPath).hash}-${parseStorePath(drvPath).name}`;
    return path.join(this.options.logDir, 'drvs', base.slice(0, 2), base.slice(2));
  }

  /** Replaces the stored log atomically: a reader sees the old or the new one, never half. */
  async write(drvPath: string, text: string): Promise<string> {
    const file = this.pathFor(drvPath);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFileAtomic(file, text);
    return file;
  }

  /** The stored log, or undefined when there is none. */
  async read(drvPath: string): Promise<string | undefined> {
    try {
      return await readFile(this.pathFor(drvPath), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }
}
