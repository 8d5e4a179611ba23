import { ValidationError } from './errors.js';
import type { BuildRequirement } from './eligibility.js';

/**
 * One BullMQ queue per (system, required feature set), so that one platform's
 * flood never sits in front of another platform's work. BullMQ forbids ':' in
 * queue names; we allow only characters that cannot collide with our separators.
 */
const TOKEN_RE = /^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$/;
const PREFIX = 'build';

export function checkSystemName(system: string): string {
  if (!TOKEN_RE.test(system)) {
    throw new ValidationError(`system ${JSON.stringify(system)} is not supported by nixfarm: use letters, digits and _ . + - only (like x86_64-linux)`);
  }
  return system;
}

export function checkFeatureName(feature: string): string {
  if (!TOKEN_RE.test(feature)) {
    throw new ValidationError(
      `system feature ${JSON.stringify(feature)} is not supported by nixfarm: use letters, digits and _ . + - only (like big-parallel)`,
    );
  }
  return feature;
}

export function queueNameFor(req: BuildRequirement): string {
  checkSystemName(req.system);
  const features = [...new Set(req.requiredFeatures)].map(checkFeatureName).sort();
  return features.length === 0 ? `${PREFIX}@${req.system}` : `${PREFIX}@${req.system}@${features.join(',')}`;
}

export function parseQueueName(name: string): BuildRequirement {
  const parts = name.split('@');
  if (parts[0] !== PREFIX || parts.length < 2 || parts.length > 3 || parts[1] === undefined) {
    throw new ValidationError(`${JSON.stringify(name)} is not a nixfarm build queue name (expected build@SYSTEM or build@SYSTEM@FEATURE,...)`);
  }
  const system = checkSystemName(parts[1]);
  const requiredFeatures = parts[2] === undefined ? [] : parts[2].split(',').map(checkFeatureName);
  return { system, requiredFeatures };
}
