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
});
export type WorkerInfo = z.infer<typeof workerInfoSchema>;
