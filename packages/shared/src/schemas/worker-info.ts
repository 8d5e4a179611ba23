import { z } from 'zod';
import { featureSchema, systemSchema, workerNameSchema } from './common.js';

/** What a worker advertises in Redis; the coordinator and other workers read it for placement and explanations. */
export const workerInfoSchema = z.object({
  name: workerNameSchema,
  systems: z.array(systemSchema).min(1),
  supportedFeatures: z.array(featureSchema),
  mandatoryFeatures: z.array(featureSchema),
  maxJobs: z.number().int().positive(),
  speedFactor: z.number().positive(),
  running: z.number().int().nonnegative(),
  heartbeatAt: z.number(),
  startedAt: z.number(),
  host: z.string(),
  publicKeyFingerprint: z.string(),
  nixVersion: z.string(),
  /** leaving (SIGTERM): takes no new builds, finishes or hands back its running ones; absent (older entries): false */
  draining: z.boolean().optional(),
  /** free bytes on the filesystem of its Nix store, as of its last heartbeat */
  freeDiskBytes: z.number().nonnegative().optional(),
  /** why it takes no new builds for now (e.g. low on disk); it resumes by itself when the cause goes */
  paused: z.string().max(1000).optional(),
  /** times its fetch watchdog restarted a stalled fetch loop since it started */
  fetchRestarts: z.number().int().nonnegative().optional(),
});
export type WorkerInfo = z.infer<typeof workerInfoSchema>;

/** Whether a worker takes new builds now: not while it drains or is paused; placement never waits for one that does not. */
export function takesNewBuilds(worker: Pick<WorkerInfo, 'draining' | 'paused'>): boolean {
  return worker.draining !== true && worker.paused === undefined;
}
