import type { ReportKey, ReportRejection, ReportSignature } from '@nixfarm/shared';
import type { AuthorizedKeys } from './authorized-keys.js';
import { LOCAL_BUILDER_NAME } from '../local/local-builder.js';

/*
 * Which key may speak for which builder, one rule for every report path (the
 * event gate and the build-log reader): the workers' authorised keys, and the
 * coordinator's own key for its local builder.
 */
/** The authorised keys by fingerprint, and the lookup a signature check uses: those plus the coordinator's own. */
export async function reportKeys(
  keys: Pick<AuthorizedKeys, 'keys'>,
  own: ReportKey | undefined,
): Promise<{ authorised: Map<string, ReportKey>; keyFor: (fingerprint: string) => ReportKey | undefined }> {
  const authorised = new Map((await keys.keys()).map((k) => [k.fingerprint, k.reportKey]));
  return { authorised, keyFor: (fingerprint) => (fingerprint === own?.fingerprint ? own : authorised.get(fingerprint)) };
}

/**
 * Whether a verified signature may speak for `worker`: it must name that worker; the coordinator's key speaks for
 * its local builder alone and no worker key for it; and a worker bound to another key that is still authorised
 * (`bound`, when known) is that key's.
 */
export function speakerProblem(
  signature: Pick<ReportSignature, 'worker' | 'key'>,
  worker: string,
  context: { own: ReportKey | undefined; authorised: ReadonlyMap<string, ReportKey>; bound?: string | undefined },
): ReportRejection | undefined {
  if (signature.worker !== worker) return 'worker-mismatch';
  if ((signature.key === context.own?.fingerprint) !== (worker === LOCAL_BUILDER_NAME)) return 'worker-bound-to-another-key';
  const { bound } = context;
  if (bound !== undefined && bound !== signature.key && context.authorised.has(bound)) return 'worker-bound-to-another-key';
  return undefined;
}
