import { z } from 'zod';
import { buildStatusSchema, drvPathSchema, runIdSchema, runStatusSchema, workerNameSchema } from './common.js';

/** The parts of a derivation's life a timeline draws, in the order they happen. */
const TIMELINE_SEGMENT_KINDS = ['wait', 'copy-in', 'build', 'copy-out', 'running'] as const;

export const timelineSegmentSchema = z.object({
  /** wait: queued until a worker took it; copy-in, build, copy-out: as the worker reported them; running: started, not finished yet */
  kind: z.enum(TIMELINE_SEGMENT_KINDS),
  /** ms since the epoch */
  start: z.number(),
  end: z.number(),
});
export type TimelineSegment = z.infer<typeof timelineSegmentSchema>;

export const timelineDerivationSchema = z.object({
  drvPath: drvPathSchema,
  name: z.string(),
  status: buildStatusSchema,
  /** the worker that built it (or builds it now) */
  worker: workerNameSchema.optional(),
  attempts: z.number().int(),
  /** true: this run waited for it to be built (its bars are drawn); false: it was valid or had failed before the run, or never started (no bars) */
  built: z.boolean(),
  /** on the chain of inputs that ended last (see RunTimeline.criticalPath) */
  critical: z.boolean(),
  /** empty when not built */
  segments: z.array(timelineSegmentSchema),
});
export type TimelineDerivation = z.infer<typeof timelineDerivationSchema>;

export const timelineWorkerSchema = z.object({
  name: workerNameSchema,
  /** derivations of this run it built (or builds now) */
  builds: z.number().int().nonnegative(),
  /** ms during which it ran at least one build of this run (the union of its builds' copy-in..copy-out spans) */
  busyMs: z.number().nonnegative(),
  /** busyMs over the run's wall time (0..1) */
  busyShare: z.number().nonnegative(),
  /** sums over its builds: several slots make these exceed busyMs */
  copyInMs: z.number().nonnegative(),
  buildMs: z.number().nonnegative(),
  copyOutMs: z.number().nonnegative(),
  /** copy in + build + copy out of its derivations on the critical path */
  criticalPathMs: z.number().nonnegative(),
  criticalPathBuilds: z.number().int().nonnegative(),
});
export type TimelineWorker = z.infer<typeof timelineWorkerSchema>;

const timelineTotalsSchema = z.object({
  /** sums over the derivations built by the run: where the time went */
  queueWaitMs: z.number().nonnegative(),
  copyInMs: z.number().nonnegative(),
  buildMs: z.number().nonnegative(),
  copyOutMs: z.number().nonnegative(),
});

/** GET /api/runs/{id}/timeline: where a run's time went, per derivation and per worker. */
export const runTimelineSchema = z.object({
  runId: runIdSchema,
  status: runStatusSchema,
  /** the run's creation (ms since the epoch) */
  start: z.number(),
  /** the run's end, or now while it runs */
  end: z.number(),
  wallMs: z.number().nonnegative(),
  active: z.boolean(),
  derivations: z.array(timelineDerivationSchema),
  /** drv paths, first input to last-finishing derivation: from the derivation that finished last, back through the input of each that finished last */
  criticalPath: z.array(drvPathSchema),
  workers: z.array(timelineWorkerSchema),
  /**
   * The worker that held most of the critical path's work (copy in + build +
   * copy out); ties, or a run without one, go to the larger busy time. Absent
   * when nothing was built.
   */
  bottleneck: workerNameSchema.optional(),
  totals: timelineTotalsSchema,
});
export type RunTimeline = z.infer<typeof runTimelineSchema>;
