import { z } from 'zod';
import { buildStatusSchema, drvPathSchema, runIdSchema } from './common.js';
import { derivationViewSchema, runViewSchema } from './api.js';
import { workerInfoSchema } from './worker-info.js';

/**
 * Response bodies of the coordinator's HTTP API that have no schema of their
 * own elsewhere. The handlers build these objects directly; the schemas exist
 * so the OpenAPI document describes every answer from zod, like the rest.
 */

export const healthResponseSchema = z.object({ ok: z.literal(true) });

export const runListResponseSchema = z.object({ runs: z.array(runViewSchema) });

export const derivationListResponseSchema = z.object({ derivations: z.array(derivationViewSchema) });

/** A registered worker as GET /api/workers lists it: what it advertises, and whether its heartbeat is recent. */
const workerListingSchema = workerInfoSchema.extend({ alive: z.boolean() });
export const workerListResponseSchema = z.object({ workers: z.array(workerListingSchema) });
/** DELETE /api/workers/{name}: the worker taken out of the registry, as it was last listed (absent: its entry could not be read). */
export const forgottenWorkerResponseSchema = z.object({ name: z.string(), lastSeen: workerListingSchema.optional() });
export type ForgottenWorkerResponse = z.infer<typeof forgottenWorkerResponseSchema>;

/** One BullMQ queue (a system and feature set) as GET /api/queues counts it; GET /api/status adds the oldest wait. */
export const queueSummarySchema = z.object({
  name: z.string(),
  /** not taken yet: waiting, prioritized and delayed jobs */
  waiting: z.number().int().nonnegative(),
  running: z.number().int().nonnegative(),
});
export type QueueSummary = z.infer<typeof queueSummarySchema>;
export const queueListResponseSchema = z.object({ queues: z.array(queueSummarySchema) });

/** GET /api/logs?info=1: what a log read found, besides its text. */
export const buildLogInfoSchema = z.object({
  drvPath: drvPathSchema,
  status: z.string(),
  source: z.enum(['stream', 'file', 'none']),
  live: z.boolean(),
  complete: z.boolean(),
  attempts: z.array(
    z.object({ worker: z.string(), jobId: z.string(), attempt: z.number().int(), end: z.string().optional(), lines: z.number().int().nonnegative() }),
  ),
  file: z.string().optional(),
});

/** GET /api/why: the explanation of one derivation (`nixfarm why`); nested parts are described loosely, they grow with the explainer. */
export const whyAnswerSchema = z.object({
  query: z.string(),
  resolvedBy: z.string(),
  derivation: z.looseObject({
    hash: z.string(),
    drvPath: drvPathSchema,
    name: z.string(),
    system: z.string(),
    requiredFeatures: z.array(z.string()),
    status: buildStatusSchema,
    statusDescription: z.string(),
    attempts: z.number().int(),
    runs: z.array(z.object({ id: runIdSchema, active: z.boolean() })),
  }),
  summary: z.string(),
  waitingFor: z.array(z.looseObject({ drvPath: drvPathSchema, status: buildStatusSchema, description: z.string() })).optional(),
  workers: z.array(z.looseObject({ name: z.string(), verdict: z.string(), reason: z.string() })).optional(),
  running: z.looseObject({ worker: z.string() }).optional(),
  result: z.looseObject({ status: buildStatusSchema, description: z.string() }).optional(),
  queue: z.looseObject({ name: z.string() }).optional(),
  notes: z.array(z.string()),
});

/** 409 from GET /api/why and GET /api/logs: a hash prefix that matches several derivations. */
export const ambiguousQueryErrorSchema = z.object({
  error: z.object({
    code: z.literal('ambiguous-query'),
    message: z.string(),
    candidates: z.array(z.object({ hash: z.string(), drvPath: drvPathSchema, status: z.string() })),
  }),
});
