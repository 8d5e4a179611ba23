import { z } from 'zod';
import { drvPathSchema, featureSchema, narHashSchema, outputMapSchema, storePathSchema, systemSchema } from './common.js';

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

/**
 * A reproducibility check (job id: checkJobId): build `build` again on this
 * worker, in Nix's check mode against the coordinator's copy of its
 * outputs, and report the rebuilt outputs' NAR hashes; the NAR of each one
 * that differs from `expected` goes back for the coordinator to show the
 * difference.
 */
export const checkJobSchema = z
  .object({
    build: buildJobSchema,
    /** output path -> its NAR hash in the coordinator's store */
    expected: z.record(storePathSchema, narHashSchema),
    /** a differing output's NAR is sent back only up to this size, uncompressed (bytes); 0: never */
    maxNarBytes: z.number().int().nonnegative(),
    /** sampled by the coordinator (--check-fraction) rather than asked for by a run: it yields to any real work */
    background: z.boolean(),
  })
  .strict();
export type CheckJob = z.infer<typeof checkJobSchema>;
