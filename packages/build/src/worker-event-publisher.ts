import type { Redis } from 'ioredis';
import { REPORT_SIGNATURE_FIELD, redisKeys, type ReportSigner, type WorkerEvent } from '@nixfarm/shared';

/** Worker events go into one Redis stream that the coordinator reads through a consumer group. */
const MAX_STREAM_LENGTH = 1_000_000;

/**
 * Posts a worker's reports, each signed with the worker's key (shared's
 * signed-report.ts). Signing and the XADD happen in one tick on one
 * connection, so the stream holds this session's reports in sequence order,
 * however many builds report at once.
 */
export class WorkerEventPublisher {
  constructor(
    private readonly redis: Redis,
    private readonly signer: ReportSigner,
  ) {}

  async publish(event: WorkerEvent): Promise<void> {
    const payload = JSON.stringify(event);
    const signature = this.signer.sign(redisKeys.workerEvents, event.worker, payload);
    await this.redis.xadd(redisKeys.workerEvents, 'MAXLEN', '~', String(MAX_STREAM_LENGTH), '*', 'e', payload, REPORT_SIGNATURE_FIELD, signature);
  }
}
