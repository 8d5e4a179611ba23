import { z } from 'zod';
import { drvPathSchema, narHashSchema, outputMapSchema, storePathSchema, systemSchema, workerNameSchema } from './common.js';

export const buildTimingsSchema = z.object({
  copyInMs: z.number().nonnegative(),
  buildMs: z.number().nonnegative(),
  copyOutMs: z.number().nonnegative(),
  totalMs: z.number().nonnegative(),
  /** bytes streamed by this build's own copies (Nix's export format: NARs plus per-path metadata); absent from older workers */
  copyInBytes: z.number().int().nonnegative().optional(),
  copyOutBytes: z.number().int().nonnegative().optional(),
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
  /** the derivation's system, for the coordinator's per-system metrics; absent from older workers */
  system: systemSchema.optional(),
  outputs: outputMapSchema.optional(),
  /** output path -> NAR hash in the worker's store after the build ("sha256:<base32>"), to tell a reproducible double build from a divergent one */
  narHashes: z.record(storePathSchema, narHashSchema).optional(),
  exitCode: z.number().int().optional(),
  /** the last lines of the build log (at most 50 on failure) */
  logTail: z.array(z.string()),
  /** the attempt streamed log lines to redisKeys.buildLog (absent: it printed nothing; the coordinator stores an empty log when the builder gave the verdict) */
  logStreamed: z.boolean().optional(),
  error: z.string().optional(),
  /** what went wrong, for machines (a Nix build failure's kind, like nix-output-cycle, or an infrastructure fault's); absent from older workers */
  errorCode: z.string().min(1).max(100).optional(),
  /** false: another try cannot help, so an aborted build ends at once instead of being retried; absent: the outcome decides, as before */
  retryable: z.boolean().optional(),
  timings: buildTimingsSchema,
  at: z.number(),
});

/**
 * A worker gives a build back unfinished (draining: its drain timeout ran
 * out, or it was told to leave now; or its Nix turned out unable to build):
 * the build goes back to its queue for another worker, and the try does not
 * count against the retry limit.
 */
export const buildHandedBackEventSchema = z.object({
  type: z.literal('handed-back'),
  drvPath: drvPathSchema,
  worker: workerNameSchema,
  jobId: z.string(),
  attempt: z.number().int().nonnegative(),
  reason: z.string().max(1000),
  at: z.number(),
});

/** Where the NAR of a rebuilt output that differs from the coordinator's copy waits for the coordinator, or why it was not sent. */
export const checkNarSchema = z.union([
  z.object({
    /** gzip-compressed NAR in this many chunks, in the LIST redisKeys.checkNar(jobId, hash part of the output path) */
    chunks: z.number().int().positive(),
    /** the NAR's size, uncompressed */
    bytes: z.number().int().nonnegative(),
  }),
  z.object({
    /** why it was not sent (larger than the job's maxNarBytes, or it could not be read) */
    skipped: z.string().max(1000),
    bytes: z.number().int().nonnegative().optional(),
  }),
]);
export type CheckNar = z.infer<typeof checkNarSchema>;

/**
 * The end of a reproducibility check (a check job, shared/job-id.ts's
 * checkJobId): the derivation was built again on this worker. Its start
 * travels as a `started` event and a hand-back as `handed-back`, both with
 * the check's job id.
 */
export const checkFinishedEventSchema = z.object({
  type: z.literal('check-finished'),
  drvPath: drvPathSchema,
  worker: workerNameSchema,
  jobId: z.string(),
  attempt: z.number().int().nonnegative(),
  /** `succeeded`: the rebuild ran to its end, whatever its bits (the NAR hashes say); the rest as for a build */
  outcome: z.enum(WORKER_OUTCOMES),
  /** output path -> NAR hash of the rebuilt output (with `succeeded`) */
  narHashes: z.record(storePathSchema, narHashSchema).optional(),
  /** output path -> its NAR sent back, for each output whose rebuild differs from the job's expected hash */
  nars: z.record(storePathSchema, checkNarSchema).optional(),
  /** the last lines of the rebuild's log (at most 50) */
  logTail: z.array(z.string()),
  error: z.string().optional(),
  errorCode: z.string().min(1).max(100).optional(),
  retryable: z.boolean().optional(),
  timings: buildTimingsSchema,
  at: z.number(),
});

export const workerEventSchema = z.discriminatedUnion('type', [
  buildStartedEventSchema,
  buildFinishedEventSchema,
  buildHandedBackEventSchema,
  checkFinishedEventSchema,
]);
export type BuildStartedEvent = z.infer<typeof buildStartedEventSchema>;
export type BuildFinishedEvent = z.infer<typeof buildFinishedEventSchema>;
export type BuildHandedBackEvent = z.infer<typeof buildHandedBackEventSchema>;
export type CheckFinishedEvent = z.infer<typeof checkFinishedEventSchema>;
export type WorkerEvent = z.infer<typeof workerEventSchema>;
