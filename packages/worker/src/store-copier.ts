import { InfrastructureError, type Logger } from '@nixfarm/shared';
import type { WorkerNix } from './worker-nix.js';
import { SerialLock } from './serial-lock.js';

export interface StoreCopierOptions {
  nix: WorkerNix;
  logger: Logger;
  /** the ssh host alias of the coordinator (from the worker's ssh config) */
  host: string;
  /** NIX_SSHOPTS: `-F <config>`; the config pins the host key and multiplexes one connection */
  sshOpts: string;
}

/** A path an input needs that the coordinator does not have: the coordinator's fault, never the builder's. */
export class MissingInputError extends InfrastructureError {
  constructor(readonly missing: string[]) {
    super('coordinator-missing-input', `coordinator error: inputs still missing after copying from the coordinator: ${missing.join(' ')}`);
  }
}

/**
 * Moves store paths between the coordinator's store and this worker's. Asks
 * the local store first and copies only what is missing, so a worker that
 * already holds a build's inputs pays no SSH round trip.
 */
export class StoreCopier {
  /**
   * Copies into this store run one at a time: when two Nix processes import the
   * same path at once, the one that finds it already valid leaves the NAR
   * unread and its ssh:// connection desyncs ("not an absolute path:
   * 'nix-archive-1'", Nix 2.8).
   */
  private readonly copyInLock = new SerialLock();

  constructor(private readonly options: StoreCopierOptions) {}

  /** Makes `paths` (and their closures) valid locally. Returns how many top-level paths had to be copied. */
  async copyIn(paths: readonly string[]): Promise<number> {
    return this.copyInLock.run(() => this.copyMissing(paths));
  }

  private async copyMissing(paths: readonly string[]): Promise<number> {
    const { nix, host, sshOpts } = this.options;
    const missing = [...(await nix.invalidPaths(paths))];
    if (missing.length === 0) return 0;
    await nix.copyClosure('from', host, missing, sshOpts);
    const still = [...(await nix.invalidPaths(missing))];
    if (still.length > 0) throw new MissingInputError(still);
    return missing.length;
  }

  async copyOut(paths: readonly string[]): Promise<void> {
    await this.options.nix.copyClosure('to', this.options.host, paths, this.options.sshOpts);
  }
}
