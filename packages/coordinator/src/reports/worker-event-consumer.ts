import type { Redis } from 'ioredis';
import { REPORT_SIGNATURE_FIELD, formatZodError, redisKeys, workerEventSchema, type Logger, type WorkerEvent } from '@nixfarm/shared';
import type { WorkerEventHandler } from './worker-event-handler.js';
import type { PostedReport, ReportGate } from './report-gate.js';

export interface WorkerEventConsumerOptions {
  /** a connection of its own: XREADGROUP blocks it */
  redis: Redis;
  handler: WorkerEventHandler;
  /** which reports count: signed by the key that speaks for their worker, never seen before */
  gate: ReportGate;
  logger: Logger;
  consumerName?: string;
  blockMs?: number;
}

/** Events read and applied together: large enough that a busy farm's reports share their round trips. */
const BATCH_SIZE = 2000;

/**
 * Reads the worker event stream through a consumer group: an event is
 * acknowledged only after it was applied (in batches, each step of a batch
 * grouped into as few round trips as its order allows), so a coordinator that dies mid-way
 * applies it again on restart (every handler step is idempotent).
 */
export class WorkerEventConsumer {
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly consumer: string;

  constructor(private readonly options: WorkerEventConsumerOptions) {
    this.consumer = options.consumerName ?? 'coordinator';
  }

  async start(): Promise<void> {
    try {
      await this.options.redis.xgroup('CREATE', redisKeys.workerEvents, redisKeys.workerEventsGroup, '0', 'MKSTREAM');
    } catch (error) {
      if (!String(error).includes('BUSYGROUP')) throw error;
    }
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.options.redis.disconnect();
    await this.loop?.catch(() => undefined);
  }

  private async run(): Promise<void> {
    // First what this consumer read but never acknowledged (a previous life), then new events.
    let cursor = '0';
    while (this.running) {
      try {
        const reply = (await this.options.redis.xreadgroup(
          'GROUP',
          redisKeys.workerEventsGroup,
          this.consumer,
          'COUNT',
          BATCH_SIZE,
          'BLOCK',
          this.options.blockMs ?? 1000,
          'STREAMS',
          redisKeys.workerEvents,
          cursor,
        )) as Array<[string, Array<[string, string[]]>]> | null;
        const entries = reply?.[0]?.[1] ?? [];
        if (entries.length === 0) {
          // The history (read by id, which never blocks) is done: from now on, new events (which blocks).
          cursor = '>';
          continue;
        }
        await this.applyUntilDone(entries);
        if (cursor !== '>') cursor = entries[entries.length - 1]![0];
      } catch (error) {
        if (!this.running) return;
        this.options.logger.error({ err: error }, 'reading worker events failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /**
   * A batch is applied in order; one that fails (Redis blip, Nix call) is retried, never skipped. Reports that do not
   * verify are dropped as if never posted; what the gate learnt (sequences, bindings) is stored with the acknowledgement.
   */
  private async applyUntilDone(entries: ReadonlyArray<[string, string[]]>): Promise<void> {
    const parsed = entries.map(([id, fields]) => this.parse(id, fields)).filter((e) => e !== undefined);
    for (let attempt = 1; this.running; attempt++) {
      try {
        const admission = await this.options.gate.admit(parsed.map((p) => p.posted));
        await this.options.handler.handleAll(parsed.filter((_, i) => admission.admitted[i]).map((p) => p.event));
        const multi = this.options.redis.multi();
        admission.commit(multi);
        await multi.xack(redisKeys.workerEvents, redisKeys.workerEventsGroup, ...entries.map(([id]) => id)).exec();
        this.options.gate.reportRejections(admission.rejected);
        return;
      } catch (error) {
        this.options.logger.error({ err: error, firstEventId: entries[0]?.[0], events: entries.length, attempt }, 'applying worker events failed; retrying');
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * attempt)));
      }
    }
  }

  /** A malformed event is logged and dropped (acknowledged with its batch): retrying cannot fix it. */
  private parse(id: string, fields: string[]): { event: WorkerEvent; posted: PostedReport } | undefined {
    const named = fieldsByName(fields);
    const payload = named.get('e') ?? 'null';
    let parsed;
    try {
      parsed = workerEventSchema.safeParse(JSON.parse(payload), { reportInput: true });
    } catch {
      parsed = undefined;
    }
    if (parsed?.success) {
      const event = parsed.data;
      return {
        event,
        posted: { id, stream: redisKeys.workerEvents, payload, signature: named.get(REPORT_SIGNATURE_FIELD), worker: event.worker, type: event.type },
      };
    }
    this.options.logger.error(
      { eventId: id, problem: parsed === undefined ? 'not JSON' : formatZodError(parsed.error, 'worker event') },
      'malformed worker event dropped',
    );
    return undefined;
  }
}

function fieldsByName(flat: readonly string[]): Map<string, string> {
  const named = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) named.set(flat[i]!, flat[i + 1]!);
  return named;
}
