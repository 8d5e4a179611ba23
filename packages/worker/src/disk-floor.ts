import { statfs } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '@nixfarm/shared';

export interface DiskFloorOptions {
  /** a directory on the filesystem to watch (the Nix store); its nearest existing ancestor until Nix creates it */
  path: string;
  /** below this many free bytes the worker takes no new builds; 0: never */
  minFreeBytes: number;
  logger: Logger;
  /** the setting that sets the floor, named in the reason so an operator knows what to change */
  setting?: string;
  /** free bytes available to unprivileged users on the filesystem holding `path` (injectable for tests) */
  freeBytes?: (path: string) => Promise<number>;
}

export interface DiskState {
  /** undefined until the first successful check */
  freeBytes: number | undefined;
  /** why no new builds are taken; undefined while the space is enough */
  paused: string | undefined;
}

const MiB = 1024 * 1024;

/**
 * A worker low on disk would take builds that fail half-way (or fill the
 * disk for everything else on the machine). Below the floor it takes no new
 * builds, says why once, and resumes by itself when space is back; running
 * builds are left alone.
 */
export class DiskFloor {
  private state: DiskState = { freeBytes: undefined, paused: undefined };
  private unreadable = false;

  constructor(private readonly options: DiskFloorOptions) {}

  get current(): DiskState {
    return this.state;
  }

  /** Measures the free space now; cheap (one statfs). A filesystem that cannot be read keeps the last state. */
  async check(): Promise<DiskState> {
    const { logger, minFreeBytes } = this.options;
    let free: number;
    try {
      free = await (this.options.freeBytes ?? freeBytesOn)(this.options.path);
      this.unreadable = false;
    } catch (error) {
      if (!this.unreadable) logger.warn({ err: error, path: this.options.path }, 'cannot read free disk space; keeping the last state');
      this.unreadable = true;
      return this.state;
    }
    const below = minFreeBytes > 0 && free < minFreeBytes;
    const fields = { path: this.options.path, freeMiB: Math.floor(free / MiB), floorMiB: Math.floor(minFreeBytes / MiB) };
    const paused = below
      ? `free space on ${this.options.path} is ${fields.freeMiB} MiB, below the floor of ${fields.floorMiB} MiB (${this.options.setting ?? 'minFreeDiskMiB'})`
      : undefined;
    // Said once when it pauses and once when it resumes; the advertised reason follows the numbers.
    if (paused !== undefined && this.state.paused === undefined)
      logger.warn({ ...fields, reason: paused }, 'low on disk: taking no new builds until space is freed');
    if (paused === undefined && this.state.paused !== undefined) logger.info(fields, 'disk space is back above the floor: taking builds again');
    this.state = { freeBytes: free, paused };
    return this.state;
  }
}

/** bavail * bsize of the filesystem holding `dir`, or of its nearest existing ancestor (a store Nix has not created yet). */
async function freeBytesOn(dir: string): Promise<number> {
  for (let current = path.resolve(dir); ; current = path.dirname(current)) {
    try {
      const stats = await statfs(current);
      return stats.bavail * stats.bsize;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || current === path.dirname(current)) throw error;
    }
  }
}
