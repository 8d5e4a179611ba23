import { z } from 'zod';
import { featureSchema, runIdSchema, systemSchema, workerNameSchema } from './common.js';
import { evaluationProgressSchema } from './jobset.js';

/** One build queue at a glance. */
export const queueStatusSchema = z.object({
  name: z.string(),
  system: systemSchema,
  features: z.array(featureSchema),
  /** jobs not taken yet: waiting, prioritized and delayed (a retry's back-off) */
  waiting: z.number().int().nonnegative(),
  running: z.number().int().nonnegative(),
  /** age of the oldest job this coordinator queued that no worker has started; 0 when none waits */
  oldestWaitSeconds: z.number().nonnegative(),
  /** live workers that take new builds and may build this queue (Nix's rule): 0 with jobs waiting means nothing will take them */
  liveWorkers: z.number().int().nonnegative(),
});
export type QueueStatus = z.infer<typeof queueStatusSchema>;

/** One registered worker at a glance. */
export const workerStatusSchema = z.object({
  name: workerNameSchema,
  up: z.boolean(),
  systems: z.array(systemSchema),
  running: z.number().int().nonnegative(),
  maxJobs: z.number().int().positive(),
  draining: z.boolean(),
  /** why it takes no new builds for now; absent when it does */
  paused: z.string().optional(),
  heartbeatAgeSeconds: z.number(),
  freeDiskBytes: z.number().nonnegative().optional(),
  /** times its fetch watchdog restarted a stalled fetch loop since it started */
  fetchRestarts: z.number().int().nonnegative().optional(),
});

/** The scaling signal of one system: how many more workers its waiting work needs. */
export const systemScalingSchema = z.object({
  system: systemSchema,
  /** jobs waiting in the queues of this system */
  waiting: z.number().int().nonnegative(),
  /** free slots of live workers that take new builds and can build some of that work */
  freeSlots: z.number().int().nonnegative(),
  /** waiting jobs no free slot can take */
  unserved: z.number().int().nonnegative(),
  /** slots one more worker would bring: the median max-jobs of the workers registered for the system */
  slotsPerWorker: z.number().int().positive(),
  /** ceil(unserved / slotsPerWorker) */
  workersNeeded: z.number().int().nonnegative(),
});
export type SystemScaling = z.infer<typeof systemScalingSchema>;

/** A jobset run whose evaluation is running, with its progress. */
export const evaluatingRunSchema = z.object({
  runId: runIdSchema,
  evaluation: evaluationProgressSchema,
});
export type EvaluatingRun = z.infer<typeof evaluatingRunSchema>;

/** GET /api/status: what `nixfarm status` shows; the same numbers as /metrics. */
export const farmStatusSchema = z.object({
  at: z.number(),
  queues: z.array(queueStatusSchema),
  workers: z.array(workerStatusSchema),
  scaling: z.array(systemScalingSchema),
  activeRuns: z.number().int().nonnegative(),
  /** the active runs still evaluating their jobset, oldest first */
  evaluating: z.array(evaluatingRunSchema),
});
export type FarmStatus = z.infer<typeof farmStatusSchema>;
