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

/**
 * Reproducibility checks have queues of their own, so a worker can tell them
 * from builds without reading a job: `check@SYSTEM[@FEATURES]` for checks a
 * run asked for, `check-sampled@...` for the coordinator's background
 * samples (served only when no other work waits), each with `!WORKER` when
 * the check must not run on that worker (the one that built the outputs).
 * Their names are listed in redisKeys.checkQueues, apart from the build queues.
 */
export interface CheckQueue {
  requirement: BuildRequirement;
  background: boolean;
  /** the worker that may not take these checks */
  excludedWorker?: string;
}

const CHECK_PREFIX = 'check';
const SAMPLED_CHECK_PREFIX = 'check-sampled';
const WORKER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function checkQueueNameFor(queue: CheckQueue): string {
  const build = queueNameFor(queue.requirement).slice(PREFIX.length);
  const prefix = queue.background ? SAMPLED_CHECK_PREFIX : CHECK_PREFIX;
  if (queue.excludedWorker === undefined) return `${prefix}${build}`;
  if (!WORKER_NAME_RE.test(queue.excludedWorker)) throw new ValidationError(`${JSON.stringify(queue.excludedWorker)} is not a worker name`);
  return `${prefix}${build}!${queue.excludedWorker}`;
}

export function isCheckQueueName(name: string): boolean {
  return name.startsWith(`${CHECK_PREFIX}@`) || name.startsWith(`${SAMPLED_CHECK_PREFIX}@`);
}

export function parseCheckQueueName(name: string): CheckQueue {
  const at = name.indexOf('@');
  const prefix = at === -1 ? name : name.slice(0, at);
  if (prefix !== CHECK_PREFIX && prefix !== SAMPLED_CHECK_PREFIX) {
    throw new ValidationError(`${JSON.stringify(name)} is not a nixfarm check queue name (expected check@SYSTEM[@FEATURE,...][!WORKER])`);
  }
  const bang = name.indexOf('!');
  const excludedWorker = bang === -1 ? undefined : name.slice(bang + 1);
  if (excludedWorker !== undefined && !WORKER_NAME_RE.test(excludedWorker)) throw new ValidationError(`${JSON.stringify(name)} names no worker after '!'`);
  const requirement = parseQueueName(`${PREFIX}${name.slice(at, bang === -1 ? undefined : bang)}`);
  return { requirement, background: prefix === SAMPLED_CHECK_PREFIX, ...(excludedWorker === undefined ? {} : { excludedWorker }) };
}
