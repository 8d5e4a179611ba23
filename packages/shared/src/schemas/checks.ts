import { z } from 'zod';
import { drvPathSchema, narHashSchema, runIdSchema, storePathSchema, workerNameSchema } from './common.js';

/**
 * A reproducibility check of one derivation: built again on another worker
 * and compared with the coordinator's copy by NAR hash. `waiting`: its build
 * has not succeeded yet; the rest as named. Ended: reproducible and after.
 */
export const CHECK_STATES = ['waiting', 'queued', 'running', 'reproducible', 'not-reproducible', 'failed', 'skipped', 'cancelled'] as const;
export type CheckState = (typeof CHECK_STATES)[number];
export type EndedCheckState = Exclude<CheckState, 'waiting' | 'queued' | 'running'>;

export function isCheckEnded(state: CheckState): state is EndedCheckState {
  switch (state) {
    case 'waiting':
    case 'queued':
    case 'running':
      return false;
    case 'reproducible':
    case 'not-reproducible':
    case 'failed':
    case 'skipped':
    case 'cancelled':
      return true;
  }
}

/** One line an operator reads; exhaustive so that a new state cannot go unexplained. */
export function describeCheckState(state: CheckState): string {
  switch (state) {
    case 'waiting':
      return 'waiting for its build to succeed';
    case 'queued':
      return 'waiting for a worker to build it again';
    case 'running':
      return 'being built again';
    case 'reproducible':
      return 'built again with the same NAR hashes';
    case 'not-reproducible':
      return 'built again with different bits';
    case 'failed':
      return 'the rebuild did not finish (see the error)';
    case 'skipped':
      return 'nothing to check (its build did not succeed)';
    case 'cancelled':
      return 'cancelled';
  }
}

const checkOutputSchema = z.object({
  name: z.string(),
  path: storePathSchema,
  /** the NAR hash in the coordinator's store */
  expected: narHashSchema.optional(),
  /** the NAR hash of the rebuild */
  actual: narHashSchema.optional(),
  differs: z.boolean().optional(),
  /** the rebuilt copy brought back to the coordinator (outside the store), or why it was not */
  copy: z.union([z.object({ bytes: z.number().int().nonnegative() }), z.object({ skipped: z.string() })]).optional(),
});

const checkDiffSummarySchema = z.object({
  /** diffoscope when it is installed on the coordinator, else nixfarm's own file listing */
  tool: z.enum(['diffoscope', 'listing']),
  added: z.number().int().nonnegative(),
  removed: z.number().int().nonnegative(),
  changed: z.number().int().nonnegative(),
  /** the plain-text report (GET it; `nixfarm diff` prints it) */
  url: z.string(),
});

export const checkViewSchema = z.object({
  drvPath: drvPathSchema,
  name: z.string(),
  system: z.string(),
  state: z.enum(CHECK_STATES),
  /** sampled by the coordinator (--check-fraction) rather than asked for by a run */
  background: z.boolean(),
  /** the runs that asked for it (`nixfarm build --check`) */
  runs: z.array(runIdSchema),
  /** who built the coordinator's copy, when known ("coordinator" for a local build) */
  builder: z.string().optional(),
  /** the worker that built it again */
  checker: workerNameSchema.optional(),
  /** the worker that may not take it (the builder) */
  excludedWorker: z.string().optional(),
  /** why it runs where it runs, when that is not the rule (no other worker could build it) */
  note: z.string().optional(),
  /** tries started */
  attempts: z.number().int().nonnegative(),
  outputs: z.array(checkOutputSchema),
  error: z.string().optional(),
  logTail: z.array(z.string()).optional(),
  queuedAt: z.number().optional(),
  startedAt: z.number().optional(),
  finishedAt: z.number().optional(),
  diff: checkDiffSummarySchema.optional(),
  /** the coordinator's --diff-hook, run on the two copies */
  diffHook: z.object({ exitCode: z.number().int().nullable(), output: z.string() }).optional(),
});
export type CheckView = z.infer<typeof checkViewSchema>;

/** GET /api/checks: how many checks ended each way, and the newest ones. */
export const checksOverviewSchema = z.object({
  /** checks by state since the farm's Redis was new (ended ones), or now (waiting, queued, running) */
  counts: z.record(z.enum(CHECK_STATES), z.number().int().nonnegative()),
  /** the coordinator's --check-fraction */
  fraction: z.number().min(0).max(1),
  /** the newest ended checks, newest first */
  recent: z.array(checkViewSchema),
  /** the newest mismatches, newest first */
  mismatches: z.array(checkViewSchema),
});
export type ChecksOverview = z.infer<typeof checksOverviewSchema>;
