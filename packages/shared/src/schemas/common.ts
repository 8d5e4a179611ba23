import { z } from 'zod';
import { storePathProblem } from '../store-path.js';
import { BUILD_STATUSES, RUN_STATUSES } from '../build-status.js';
import { NIX_BASE32_CHAR } from '../nix-base32.js';

export const storePathSchema = z.string().superRefine((value, ctx) => {
  const problem = storePathProblem(value);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `not a valid Nix store path (${problem})` });
});

export const drvPathSchema = storePathSchema.refine((p) => p.endsWith('.drv'), 'a derivation path must end in .drv');

const TOKEN_RE = /^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$/;
export const systemSchema = z.string().regex(TOKEN_RE, 'a system is letters, digits and _ . + - (like x86_64-linux)');
export const featureSchema = z.string().regex(TOKEN_RE, 'a feature is letters, digits and _ . + - (like big-parallel)');
export const workerNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a worker name is 1-63 letters, digits and _ . - starting with a letter or digit');
export const outputMapSchema = z.record(z.string().regex(/^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$/), storePathSchema);
export const buildStatusSchema = z.enum(BUILD_STATUSES as unknown as [string, ...string[]]);
export const runStatusSchema = z.enum(RUN_STATUSES);
export const runIdSchema = z.string().regex(/^[a-z0-9]{6,40}$/, 'a run id is lower-case letters and digits');

export { formatZodError } from './zod-messages.js';

/** A NAR hash as Nix prints it: `sha256:` and 52 base-32 digits (or 64 hex digits) */
export const narHashSchema = z.string().regex(new RegExp(`^sha256:(${NIX_BASE32_CHAR}{52}|[0-9a-f]{64})$`), 'a NAR hash like sha256:<52 base-32 digits>');
