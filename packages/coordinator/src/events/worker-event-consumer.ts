import type { Redis } from 'ioredis';
import { formatZodError, redisKeys, workerEventSchema, type Logger } from '@nixfarm/shared';
import type { WorkerEventHandler } from './worker-event-handler.js';

export interface WorkerEventConsumerOptions {
  /** a connection of its own: XREADGROUP blocks it */
  redis: Redis;
  handler: WorkerEventHandler;
  logger: Logger;
  consumerName?: string;
  blockMs?: number;
}

/**
 * Reads the worker event stream through a consumer group: an event is
 * acknowledged only after it was applied, so a coordinator that dies mid-way
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
          200,
          'BLOCK',
          this.options.blockMs ?? 1000,
          'STREAMS',
          redisKeys.workerEvents,
          cursor,
        )) as Array<[string, Array<[string, string[]]>]> | null;
        const entries = reply?.[0]?.[1] ?? [];
        if (cursor === '0' && entries.length === 0) cursor = '>';
        for (const [id, fields] of entries) {
          await this.applyUntilDone(id, fields);
          if (cursor !== '>') cursor = id;
        }
      } catch (error) {
        if (!this.running) return;
        this.options.logger.error({ err: error }, 'reading worker events failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /** Events are applied in order; one that fails (Redis blip, Nix call) is retried, never skipped. */
  private async applyUntilDone(id: string, fields: string[]): Promise<void> {
    for (let attempt = 1; this.running; attempt++) {
      try {
        await this.apply(id, fields);
        return;
      } catch (error) {
        this.options.logger.error({ err: error, eventId: id, attempt }, 'applying a worker event failed; retrying');
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * attempt)));
      }
    }
  }

  private async apply(id: string, fields: string[]): Promise<void> {
    const raw = fields[1];
    let parsed;
    try {
      parsed = workerEventSchema.safeParse(JSON.parse(raw ?? 'null'));
    } catch {
      parsed = undefined;
    }
    if (parsed === undefined || !parsed.success) {
      this.options.logger.error(
        { eventId: id, problem: parsed === undefined ? 'not JSON' : formatZodError(parsed.error, 'worker event') },
        'malformed worker event dropped',
      );
    } else {
      await this.options.handler.handle(parsed.data);
    }
    await this.options.redis.xack(redisKeys.workerEvents, redisKeys.workerEventsGroup, id);
  }
}
