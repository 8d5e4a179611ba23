import type { RedisTls } from './redis-tls.js';
import { diagnoseRedisTlsFailure, probeTlsSession, type RedisTlsError } from './redis-tls-failure.js';
import type { SentinelTarget } from './redis-sentinel.js';

export interface SentinelTlsFailureContext {
  /** the rediss+sentinel:// URL as shown (no passwords) */
  shownUrl: string;
  tls: RedisTls | undefined;
  setting: string;
}

/**
 * Names a TLS cause when no sentinel of a rediss+sentinel:// URL answered.
 * ioredis's sentinel clients report a failed handshake only as "Connection is
 * closed.", so each sentinel gets one handshake of our own with the same
 * settings; the first that fails for a TLS reason (unknown CA, expired
 * certificate, client certificate refused, plain port) is said, as for a
 * rediss:// URL, naming that sentinel. Undefined when none does: the caller's
 * wait goes on (sentinels not up yet are not a TLS problem).
 */
export async function diagnoseSentinelTlsFailure(target: SentinelTarget, context: SentinelTlsFailureContext): Promise<RedisTlsError | undefined> {
  if (!target.tls || context.tls === undefined) return undefined;
  for (const sentinel of target.sentinels) {
    const { error } = await probeTlsSession(sentinel, context.tls.options);
    if (error === undefined) continue;
    const host = sentinel.host.includes(':') ? `[${sentinel.host}]` : sentinel.host;
    const url = `rediss://${host}:${sentinel.port}`;
    const failure = await diagnoseRedisTlsFailure(error, {
      url,
      shownUrl: `${url} (a sentinel of ${context.shownUrl})`,
      tls: context.tls,
      setting: context.setting,
    });
    if (failure !== undefined) return failure;
  }
  return undefined;
}
