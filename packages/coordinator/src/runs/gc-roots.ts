import { mkdir, rm, symlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import { assertStorePath, hashPart } from '@nixfarm/shared';

/** Symlink calls in flight at once: enough to keep libuv's thread pool busy, few enough not to flood it. */
const HOLDS_IN_FLIGHT = 32;

/**
 * GC roots are plain symlinks under a directory inside Nix's gcroots: Nix's
 * collector treats every symlink found there as a root, so no Nix call is
 * needed to add or drop one.
 */
export class GcRoots {
  constructor(private readonly dir: string) {}

  runDir(runId: string): string {
    return path.join(this.dir, 'runs', runId);
  }

  /** Prefix for nix-instantiate --add-root: roots for the run's .drv files. */
  derivationRootPrefix(runId: string): string {
    return path.join(this.runDir(runId), 'drv');
  }

  async prepareRun(runId: string): Promise<void> {
    await mkdir(this.runDir(runId), { recursive: true });
  }

  /** Keeps a built output alive until the run ends, so a GC mid-run cannot delete an input of a later build. */
  async holdOutput(runId: string, outputPath: string): Promise<void> {
    assertStorePath(outputPath);
    const link = path.join(this.runDir(runId), `out-${path.basename(outputPath)}`);
    try {
      await replaceSymlink(outputPath, link);
    } catch (error) {
      // The run already ended (cancelled, or finished by another path): it holds nothing any more.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }

  /** Many holds at once, a bounded number of symlink calls in flight: a run can hold a hundred thousand paths. */
  async holdOutputs(holds: ReadonlyArray<{ runId: string; path: string }>): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < holds.length) {
        const { runId, path } = holds[next++]!;
        await this.holdOutput(runId, path);
      }
    };
    await Promise.all(Array.from({ length: Math.min(HOLDS_IN_FLIGHT, holds.length) }, worker));
  }

  async releaseRun(runId: string): Promise<void> {
    await rm(this.runDir(runId), { recursive: true, force: true });
  }

  /** Like nix-build's ./result: a lasting root for each result of a succeeded run. */
  async addResultRoot(runId: string, index: number, outputPath: string): Promise<string> {
    assertStorePath(outputPath);
    const dir = path.join(this.dir, 'results', runId);
    await mkdir(dir, { recursive: true });
    const link = path.join(dir, `${index}-${hashPart(outputPath).slice(0, 8)}-${path.basename(outputPath).slice(33)}`);
    await replaceSymlink(outputPath, link);
    return link;
  }
}

async function replaceSymlink(target: string, link: string): Promise<void> {
  try {
    await symlink(target, link);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    await unlink(link);
    await symlink(target, link);
  }
}
