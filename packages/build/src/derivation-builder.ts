import type { BuildJob, NixFailureCode } from '@nixfarm/shared';

/** How one build attempt ended when the builder itself ran; infrastructure faults (retried) and Nix setup faults (NixSetupError) are thrown instead. */
export type BuildAttemptStatus = 'succeeded' | 'failed' | 'timed-out' | 'log-limit-exceeded' | 'cancelled';

export interface BuildAttempt {
  status: BuildAttemptStatus;
  error?: string;
  /** why it failed, for machines (classifyNixBuildFailure's code, like nix-output-cycle) */
  errorCode?: NixFailureCode;
}

export interface BuildOptions {
  /** every line of the build log, as it is written */
  onLogLine: (line: string) => void;
  signal?: AbortSignal;
}

/** Realises exactly one derivation whose inputs are already valid in the building store. */
export interface DerivationBuilder {
  build(job: BuildJob, options: BuildOptions): Promise<BuildAttempt>;
}
