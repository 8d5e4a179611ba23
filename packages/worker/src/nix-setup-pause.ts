import type { Logger, NixFailureCode, NixSetupError } from '@nixfarm/shared';

export interface NixSetupPauseOptions {
  logger: Logger;
  /** the start-up build probe, run again to learn whether the setup was fixed; rejects while this Nix still cannot build */
  probe: () => Promise<unknown>;
  /** how often a paused worker runs the probe again (ms) */
  recheckMs: number;
  /** after a passing probe, before builds are taken again: sessions opened before the fix still hold the old nix.conf */
  onResume?: () => Promise<void>;
}

/**
 * Faults the probe cannot see (it builds for the builtin platform with no
 * features): their fix is a new flag or nix.conf line, which a restart
 * brings in, so the worker stays paused until then.
 */
const UNSEEN_BY_PROBE = new Set<NixFailureCode>(['nix-platform-mismatch']);

/**
 * A worker whose Nix cannot build (it passed the start-up probe, then a
 * build found build users gone, the sandbox broken, a platform it
 * advertises but cannot build) would fail every build it takes, each a
 * try lost for a derivation that is not at fault. Instead it takes no new
 * builds and says why in its heartbeat, and logs the fix once; it runs the
 * probe again now and then and takes builds again when Nix builds.
 */
export class NixSetupPause {
  private fault: NixSetupError | undefined;
  private nextCheckAt = 0;
  /** fault codes whose fix was logged: said once, however often the worker pauses for them */
  private readonly explained = new Set<string>();

  constructor(private readonly options: NixSetupPauseOptions) {}

  /** Why no new builds are taken; undefined while Nix builds. */
  get paused(): string | undefined {
    if (this.fault === undefined) return undefined;
    const until = UNSEEN_BY_PROBE.has(this.fault.code) ? ' (until the worker is restarted)' : '';
    return `${this.fault.oneLine(1000 - until.length)}${until}`;
  }

  /** Pauses for this fault; false when already paused (another build hit the same wall). */
  trip(error: NixSetupError): boolean {
    if (this.fault !== undefined) return false;
    this.fault = error;
    this.nextCheckAt = Date.now() + this.options.recheckMs;
    const fields = { code: error.code, nix: error.nix, nixMessage: error.nixMessage };
    if (this.explained.has(error.code)) {
      this.options.logger.warn(fields, 'Nix cannot build here again: taking no new builds (the fix was logged before)');
    } else {
      this.explained.add(error.code);
      this.options.logger.error(
        { ...fields, fix: error.fix },
        `Nix cannot build here: taking no new builds, handing builds back for other workers; fix: ${error.fix}`,
      );
    }
    return true;
  }

  /** The pause reason now; while paused and due, runs the probe first (and resumes when it passes). */
  async check(): Promise<string | undefined> {
    const fault = this.fault;
    if (fault === undefined || UNSEEN_BY_PROBE.has(fault.code) || Date.now() < this.nextCheckAt) return this.paused;
    try {
      await this.options.probe();
    } catch (error) {
      this.nextCheckAt = Date.now() + this.options.recheckMs;
      this.options.logger.debug({ err: error }, 'Nix still cannot build; staying paused');
      return this.paused;
    }
    await this.options.onResume?.();
    this.fault = undefined;
    this.options.logger.info({ code: fault.code }, 'Nix builds again (a test build passed): taking builds again');
    return undefined;
  }
}
