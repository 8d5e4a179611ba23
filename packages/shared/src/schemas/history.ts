import { z } from 'zod';
import { systemSchema } from './common.js';

/** The ranges GET /api/history answers, and the seconds each spans. */
export const HISTORY_RANGES = { '15m': 15 * 60, '1h': 60 * 60, '6h': 6 * 60 * 60, '24h': 24 * 60 * 60 } as const;
export type HistoryRange = keyof typeof HISTORY_RANGES;

/** At most this many samples are kept (24 h at the default 10 s interval); fewer at a longer interval: 24 h of them. */
export const HISTORY_MAX_SAMPLES = 8640;

/** The coordinator's own default: a sample every 10 s. */
export const DEFAULT_HISTORY_INTERVAL_SECONDS = 10;

const count = z.number().int().nonnegative();

/** One system's queues and scaling signal at a sample. */
const historySystemSchema = z.object({
  system: systemSchema,
  /** jobs of the system's queues not taken yet (waiting, prioritized, delayed retries) */
  waiting: count,
  /** jobs of the system's queues a worker runs */
  running: count,
  /** live workers that serve the system */
  workersUp: count,
  /** the scaling signal: more workers the system's waiting work needs */
  workersNeeded: count,
});

/**
 * One sample of the farm's history: the queues, the workers and the scaling
 * signal at that moment (from the same snapshot as GET /api/status), and the
 * builds that ended since the sample before, by status.
 */
export const historySampleSchema = z.object({
  /** unix ms */
  at: z.number().int().nonnegative(),
  systems: z.array(historySystemSchema),
  /** registered workers whose heartbeat is fresh */
  workersUp: count,
  /** registered workers, up or not */
  workersRegistered: count,
  /** builds a worker (or the coordinator's local builder) ended since the previous sample, by terminal status; statuses with none are left out */
  finished: z.record(z.string(), count),
});
export type HistorySample = z.infer<typeof historySampleSchema>;

export const historyQuerySchema = z.object({
  range: z
    .enum(Object.keys(HISTORY_RANGES) as [HistoryRange, ...HistoryRange[]], {
      error: `range must be one of ${Object.keys(HISTORY_RANGES).join(', ')}`,
    })
    .default('1h')
    .describe(`how far back: ${Object.keys(HISTORY_RANGES).join(', ')} (default 1h)`),
});

export const historyResponseSchema = z.object({
  range: z.enum(Object.keys(HISTORY_RANGES) as [HistoryRange, ...HistoryRange[]]),
  /** seconds between samples, as this coordinator takes them (a restart with another interval leaves older samples at theirs) */
  intervalSeconds: z.number().int().positive(),
  /** oldest first */
  samples: z.array(historySampleSchema),
});
export type HistoryResponse = z.infer<typeof historyResponseSchema>;
