import { z } from 'zod';
import { drvPathSchema, storePathSchema } from './common.js';

/**
 * A jobset attribute's build result, computed from the derivation graph when
 * asked: `succeeded` (built by this run), `cached` (its outputs were valid
 * before), `failed` (its own build failed: `failedDrv`), `dependency-failed`
 * (`dependency` names the input that failed), `unsupported`, `cancelled`,
 * `pending` (still waiting, queued or running), `evaluation-failed` (no
 * derivation: see `error`), or `not-built` (an eval-only run: evaluated,
 * its outputs not valid, nothing built).
 */
const ATTRIBUTE_BUILD_STATUSES = [
  'succeeded',
  'cached',
  'failed',
  'dependency-failed',
  'unsupported',
  'cancelled',
  'pending',
  'evaluation-failed',
  'not-built',
] as const;

/** One attribute as its evaluation recorded it: nix-eval-jobs' field names, plus nixfarm's `errorKind`. */
export const evaluatedAttributeSchema = z.object({
  attr: z.string(),
  attrPath: z.array(z.string()),
  drvPath: drvPathSchema.optional(),
  outputs: z.record(z.string(), storePathSchema).optional(),
  system: z.string().optional(),
  name: z.string().optional(),
  error: z.string().optional(),
  /** why there is no derivation (evaluation-error, not-a-derivation, out-of-memory, timed-out, evaluator-crashed, evaluator-killed) */
  errorKind: z.string().optional(),
  /** eval-only runs: every output already valid in the coordinator's store (nix-eval-jobs' --check-cache-status) */
  isCached: z.boolean().optional(),
});
export type EvaluatedAttribute = z.infer<typeof evaluatedAttributeSchema>;

/** An attribute with its build result: what `nixfarm build --jobset --json` prints, one per line. */
export const jobsetAttributeSchema = evaluatedAttributeSchema.extend({
  buildStatus: z.enum(ATTRIBUTE_BUILD_STATUSES),
  /** failed: the derivation whose build failed, and how (failed, timed-out, cached-failure, ...) */
  failedDrv: drvPathSchema.optional(),
  failure: z.string().optional(),
  /** dependency-failed: the input derivation that failed */
  dependency: drvPathSchema.optional(),
});
export type JobsetAttribute = z.infer<typeof jobsetAttributeSchema>;

/** How many of a jobset run's derived attributes ended each way so far; `pending` still waits, is queued or builds. */
export const attributeBuildCountsSchema = z.object({
  succeeded: z.number().int().nonnegative(),
  cached: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  'dependency-failed': z.number().int().nonnegative(),
  unsupported: z.number().int().nonnegative(),
  cancelled: z.number().int().nonnegative(),
  pending: z.number().int().nonnegative(),
});
export type AttributeBuildCounts = z.infer<typeof attributeBuildCountsSchema>;
/** An attribute's build outcome as counted: every build status but `evaluation-failed` (those are `failed` of the evaluation). */
export type AttributeBuildOutcome = keyof AttributeBuildCounts;

/**
 * A jobset run's evaluation: running, done, failed (it stopped: `error`) or
 * cancelled; attributes evaluated so far, how many are known to be left, the
 * pace, and how the builds of the evaluated attributes went.
 */
export const evaluationProgressSchema = z.object({
  state: z.enum(['evaluating', 'done', 'failed', 'cancelled']),
  /** attributes with a result so far, and how many of them failed to evaluate */
  done: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  /** attributes found so far by listing the jobset's sets (each gets a result); the total once discovery has ended */
  discovered: z.number().int().nonnegative(),
  /** whether sets are still being listed: while true, more attributes than `discovered` may come */
  discovering: z.boolean(),
  /** discovered attributes without a result yet (for an evaluation that stopped: those it never evaluated) */
  left: z.number().int().nonnegative(),
  startedAt: z.number(),
  /** when evaluation ended (absent while it runs) */
  endedAt: z.number().optional(),
  error: z.string().optional(),
  /** from the start to the end, or to now while it runs, ms */
  elapsedMs: z.number().nonnegative(),
  /** attributes done per second of elapsed time */
  attributesPerSecond: z.number().nonnegative(),
  /** the attributes that have a derivation, by build outcome */
  builds: attributeBuildCountsSchema,
});
export type EvaluationProgress = z.infer<typeof evaluationProgressSchema>;

/** GET /api/runs/:id/attributes: a page of attributes in the order they were evaluated, with the evaluation's progress. */
export const attributeListResponseSchema = z.object({
  attributes: z.array(jobsetAttributeSchema),
  offset: z.number().int().nonnegative(),
  /** attributes recorded so far (grows while evaluation runs) */
  total: z.number().int().nonnegative(),
  evaluation: evaluationProgressSchema,
});
export type AttributeListResponse = z.infer<typeof attributeListResponseSchema>;
