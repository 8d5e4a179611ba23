import { z } from 'zod';
import { drvPathSchema, outputMapSchema, workerNameSchema } from './common.js';

export const buildTimingsSchema = z.object({
  copyInMs: z.number().nonnegative(),
  buildMs: z.number().nonnegative(),
  copyOutMs: z.number().nonnegative(),
  totalMs: z.number().nonnegative(),
});
export type BuildTimings = z.infer<typeof buildTimingsSchema>;

/** Outcomes a worker may report; the coordinator derives everything else (dependency-failed, cached-failure, ...). */
export const WORKER_OUTCOMES = ['succeeded', 'failed', 'aborted', 'timed-out', 'log-limit-exceeded', 'cancelled'] as const;
export type WorkerOutcome = (typeof WORKER_OUTCOMES)[number];

export const buildStartedEventSchema = z.object({
  type: z.literal('started'),
  drvPath: drvPathSchema,
  worker: workerNameSchema,
  jobId: z.string(),
  attempt: z.number().int().nonnegative(),
  at: z.number(),
});

export const buildFinishedEventSchema = z.object({
  type: z.literal('finished'),
  drvPath: drvPathSchema,
  worker: workerNameSchema,
  jobId: z.string(),
  attempt: z.number().int().nonnegative(),
  outcome: z.enum(WORKER_OUTCOMES),
  outputs: outputMapSchema.optional(),
  exitCode: z.number().int().optional(),
  /** the last lines of the build log (at most 50 on failure) */
  logTail: z.array(z.string()),
  error: z.string().optional(),
  timings: buildTimingsSchema,
  at: z.number(),
});

export const workerEventSchema = z.discriminatedUnion('type', [buildStartedEventSchema, buildFinishedEventSchema]);
export type BuildStartedEvent = z.infer<typeof buildStartedEventSchema>;
export type BuildFinishedEvent = z.infer<typeof buildFinishedEventSchema>;
export type WorkerEvent = z.infer<typeof workerEventSchema>;
