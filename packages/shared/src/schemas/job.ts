import { z } from 'zod';
import { drvPathSchema, featureSchema, outputMapSchema, storePathSchema, systemSchema } from './common.js';

/**
 * What the coordinator puts in a BullMQ job: everything a worker needs to build
 * one derivation without asking again. Validated by the worker before use.
 */
export const buildJobSchema = z
  .object({
    drvPath: drvPathSchema,
    name: z.string().min(1).max(256),
    system: systemSchema,
    requiredFeatures: z.array(featureSchema),
    outputs: outputMapSchema,
    /** store paths that must be valid on the worker before building: the used outputs of input derivations and the input sources */
    inputPaths: z.array(storePathSchema),
    timeoutSeconds: z.number().int().positive().optional(),
    maxSilentSeconds: z.number().int().positive().optional(),
  })
  .strict();
export type BuildJob = z.infer<typeof buildJobSchema>;
