/**
 * Nix's rule for which machine may build a derivation (Machine::allSupported /
 * mandatoryMet in build-remote): the system is one of the machine's systems,
 * every required feature is supported or mandatory, and every mandatory
 * feature is required.
 */
export interface WorkerCapabilities {
  systems: readonly string[];
  supportedFeatures: readonly string[];
  mandatoryFeatures: readonly string[];
}

export interface BuildRequirement {
  system: string;
  requiredFeatures: readonly string[];
}

/** Derivations with this system are Nix built-ins (builtin:fetchurl); every Nix can run them. */
export const BUILTIN_SYSTEM = 'builtin';

export type IneligibilityReason =
  | { kind: 'wrong-system'; system: string; workerSystems: readonly string[] }
  | { kind: 'missing-features'; missing: readonly string[] }
  | { kind: 'mandatory-features-not-required'; unmet: readonly string[] };

export function ineligibilityReason(worker: WorkerCapabilities, req: BuildRequirement): IneligibilityReason | undefined {
  if (req.system !== BUILTIN_SYSTEM && !worker.systems.includes(req.system)) {
    return { kind: 'wrong-system', system: req.system, workerSystems: worker.systems };
  }
  const missing = req.requiredFeatures.filter((f) => !worker.supportedFeatures.includes(f) && !worker.mandatoryFeatures.includes(f));
  if (missing.length > 0) return { kind: 'missing-features', missing };
  const unmet = worker.mandatoryFeatures.filter((f) => !req.requiredFeatures.includes(f));
  if (unmet.length > 0) return { kind: 'mandatory-features-not-required', unmet };
  return undefined;
}

export function canBuild(worker: WorkerCapabilities, req: BuildRequirement): boolean {
  return ineligibilityReason(worker, req) === undefined;
}

export function describeIneligibility(reason: IneligibilityReason): string {
  switch (reason.kind) {
    case 'wrong-system':
      return `wrong system: needs ${reason.system}, worker has ${reason.workerSystems.join(', ') || 'none'}`;
    case 'missing-features':
      return `missing feature${reason.missing.length > 1 ? 's' : ''}: ${reason.missing.join(', ')}`;
    case 'mandatory-features-not-required':
      return `worker only takes builds that require ${reason.unmet.join(', ')}`;
  }
}
