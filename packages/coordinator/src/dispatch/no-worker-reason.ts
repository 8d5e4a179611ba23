import { describeIneligibility, ineligibilityReason, type WorkerInfo } from '@nixfarm/shared';

/** A live worker and why it cannot take a derivation. */
export interface WorkerRefusal {
  name: string;
  reason: string;
}

/** What a derivation needs of a worker: its system and required features. */
export interface BuildRequirement {
  system: string;
  requiredFeatures: string[];
}

/** undefined when some live worker can build it; otherwise each live worker's reason. */
export function whyNoWorker(workers: readonly WorkerInfo[], requirement: BuildRequirement): WorkerRefusal[] | undefined {
  const wanted = { system: requirement.system, requiredFeatures: requirement.requiredFeatures };
  const refusals: WorkerRefusal[] = [];
  for (const w of workers) {
    const why = ineligibilityReason(w, wanted);
    if (why === undefined) return undefined;
    refusals.push({ name: w.name, reason: describeIneligibility(why) });
  }
  return refusals;
}

/** The derivation's error when no live worker can build it: its system and features, then each worker's reason. */
export function unsupportedReason(requirement: BuildRequirement, refusals: readonly WorkerRefusal[]): string {
  const features = requirement.requiredFeatures.length > 0 ? `features ${requirement.requiredFeatures.join(', ')}` : 'no features';
  const who = refusals.length === 0 ? 'no worker is registered' : refusals.map((w) => `${w.name}: ${w.reason}`).join('; ');
  return `no live worker can build it (system ${requirement.system}, ${features}): ${who}`;
}
