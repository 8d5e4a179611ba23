import { z } from 'zod';
import { buildStatusSchema, drvPathSchema, runIdSchema, workerNameSchema } from './common.js';
import { farmStatusSchema, workerStatusSchema } from './farm-status.js';
import { runViewSchema } from './api.js';
import { uploadSummarySchema } from './uploads.js';
import { checksOverviewSchema } from './checks.js';

/** A derivation a worker (or the coordinator itself, as `coordinator`) is building now. */
export const runningBuildSchema = z.object({
  drvPath: drvPathSchema,
  name: z.string(),
  system: z.string(),
  worker: z.string(),
  /** when this attempt started (ms since the epoch) */
  startedAt: z.number(),
  attempts: z.number().int(),
  /** the runs that wait for it */
  runIds: z.array(runIdSchema),
});
export type RunningBuild = z.infer<typeof runningBuildSchema>;

/** A derivation of a recent run that ended in a failure status; its log is at GET /api/logs?path=<drvPath>. */
export const recentFailureSchema = z.object({
  drvPath: drvPathSchema,
  name: z.string(),
  system: z.string(),
  status: buildStatusSchema,
  worker: workerNameSchema.optional(),
  finishedAt: z.number().optional(),
  error: z.string().optional(),
  runId: runIdSchema,
});
export type RecentFailure = z.infer<typeof recentFailureSchema>;

/** One recent run and how far it got. */
export const runProgressSchema = runViewSchema
  .pick({ id: true, status: true, createdAt: true, finishedAt: true, total: true, counts: true, error: true, evaluation: true })
  .extend({
    /** the attributes it builds ('' for a top-level derivation) */
    attrs: z.array(z.string()),
  });
export type RunProgress = z.infer<typeof runProgressSchema>;

/** A worker as the dashboard shows it: its status, speed factor and what it builds. */
export const dashboardWorkerSchema = workerStatusSchema.extend({
  speedFactor: z.number().positive(),
  building: z.array(z.object({ drvPath: drvPathSchema, name: z.string(), startedAt: z.number() })),
});
export type DashboardWorker = z.infer<typeof dashboardWorkerSchema>;

/**
 * GET /api/dashboard and each `snapshot` event of GET /api/dashboard/events:
 * everything the web dashboard draws, in one object, so that what it shows is
 * one consistent moment of the farm.
 */
export const dashboardSnapshotSchema = farmStatusSchema.omit({ workers: true, activeRuns: true, evaluating: true }).extend({
  workers: z.array(dashboardWorkerSchema),
  running: z.array(runningBuildSchema),
  failures: z.array(recentFailureSchema),
  runs: z.array(runProgressSchema),
  /** uploads to external caches (absent: the coordinator has no upload queue) */
  uploads: uploadSummarySchema.optional(),
  /** reproducibility checks: counts, and the newest mismatches with links to their reports */
  checks: checksOverviewSchema.optional(),
});
export type DashboardSnapshot = z.infer<typeof dashboardSnapshotSchema>;

/** POST /api/session: trade an API token for a cookie the browser sends with the dashboard's GET requests. */
export const sessionRequestSchema = z.object({ token: z.string().min(1).max(200) }).strict();
export const sessionResponseSchema = z.object({ scope: z.enum(['read', 'admin']) });
