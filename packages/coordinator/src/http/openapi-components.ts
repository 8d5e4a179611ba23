import { z } from 'zod';
import {
  ambiguousQueryErrorSchema,
  apiErrorSchema,
  buildLogInfoSchema,
  dashboardSnapshotSchema,
  derivationListResponseSchema,
  farmStatusSchema,
  forgottenWorkerResponseSchema,
  healthResponseSchema,
  queueListResponseSchema,
  runEventSchema,
  runListResponseSchema,
  runTimelineSchema,
  runViewSchema,
  sessionRequestSchema,
  sessionResponseSchema,
  submitRunRequestSchema,
  whyAnswerSchema,
  workerListResponseSchema,
} from '@nixfarm/shared';

/**
 * The API document's named schemas: each zod schema a route declares that has
 * a name here becomes a `$ref` to `#/components/schemas/<name>` (requests get
 * the suffix `Input`: their defaults are optional). Names live in zod's
 * global registry, where fastify-type-provider-zod looks for them; a process
 * registers them once, however many servers it builds.
 */
const COMPONENTS: Record<string, z.ZodType> = {
  SubmitRunRequest: submitRunRequestSchema,
  SessionRequest: sessionRequestSchema,
  Health: healthResponseSchema,
  RunView: runViewSchema,
  RunList: runListResponseSchema,
  DerivationList: derivationListResponseSchema,
  RunTimeline: runTimelineSchema,
  RunEvent: runEventSchema,
  WorkerList: workerListResponseSchema,
  ForgottenWorker: forgottenWorkerResponseSchema,
  QueueList: queueListResponseSchema,
  FarmStatus: farmStatusSchema,
  WhyAnswer: whyAnswerSchema,
  BuildLogInfo: buildLogInfoSchema,
  ApiError: apiErrorSchema,
  AmbiguousQueryError: ambiguousQueryErrorSchema,
  DashboardSnapshot: dashboardSnapshotSchema,
  SessionResponse: sessionResponseSchema,
};
for (const [id, schema] of Object.entries(COMPONENTS)) if (!z.globalRegistry.has(schema)) z.globalRegistry.add(schema, { id });

/** One answer of a route as its schema declares it (the shape Fastify and @fastify/swagger read); no content: no body. */
export interface RouteResponse {
  description: string;
  content?: Record<string, { schema: z.ZodType }>;
  headers?: Record<string, z.ZodType>;
}

export const jsonResponse = (description: string, schema: z.ZodType): RouteResponse => ({ description, content: { 'application/json': { schema } } });

/** An answer in the API's error shape, {"error": {"code", "message"}}; the description names the codes. */
export const errorResponse = (description: string): RouteResponse => jsonResponse(description, apiErrorSchema);

/** 409 from a hash prefix that matches several derivations: the error lists them. */
export const ambiguousResponse: RouteResponse = jsonResponse('a prefix matching several derivations', ambiguousQueryErrorSchema);

export const textSchema = (description?: string): z.ZodString => (description === undefined ? z.string() : z.string().describe(description));

/**
 * Server-sent events whose data lines are JSON objects of a named schema:
 * OpenAPI has no way to type them, so the stream's schema points at it with
 * x-nixfarm-event-data.
 */
export function eventStreamSchema(description: string, data: z.ZodType): z.ZodString {
  const name = z.globalRegistry.get(data)?.id;
  if (name === undefined) throw new Error('an event stream names the schema of its data: give it a name in openapi-components.ts');
  return z.string().meta({ description, 'x-nixfarm-event-data': { $ref: `#/components/schemas/${name}` } });
}

export const eventStreamResponse = (description: string, stream: z.ZodString): RouteResponse => ({
  description,
  content: { 'text/event-stream': { schema: stream } },
});
