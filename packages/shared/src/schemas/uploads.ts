import { z } from 'zod';
import { storePathSchema } from './common.js';

/** pending: queued or uploading; retrying: the last attempt failed, another is due; given-up: every attempt failed (`nixfarm push` tries again). */
const UPLOAD_STATES = ['pending', 'uploaded', 'retrying', 'given-up'] as const;
const uploadStateSchema = z.enum(UPLOAD_STATES);

/** One output's upload to one cache. */
export const uploadRecordSchema = z.object({
  path: storePathSchema,
  /** the cache URL */
  target: z.string(),
  state: uploadStateSchema,
  /** attempts made so far */
  attempts: z.number().int(),
  /** the last attempt's error, while retrying or given up */
  error: z.string().optional(),
  queuedAt: z.number(),
  uploadedAt: z.number().optional(),
});
export type UploadRecord = z.infer<typeof uploadRecordSchema>;

/** The dashboard's upload panel: how far behind the caches are, and the uploads whose last attempt failed. */
export const uploadSummarySchema = z.object({
  /** uploads not done yet */
  depth: z.number().int(),
  /** age of the oldest of them, seconds */
  lagSeconds: z.number(),
  /** retrying or given up, the latest failure first */
  failing: z.array(uploadRecordSchema),
});
export type UploadSummary = z.infer<typeof uploadSummarySchema>;

export const uploadListResponseSchema = z.object({ uploads: z.array(uploadRecordSchema) });

/** POST /api/runs/{id}/uploads: upload a run's outputs to these caches now. */
export const pushRequestSchema = z.object({ targets: z.array(z.string()).min(1, 'name at least one cache URL to push to') }).strict();
