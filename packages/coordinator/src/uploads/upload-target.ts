import { createHash } from 'node:crypto';
import { access, constants, mkdir } from 'node:fs/promises';
import { NixfarmError, parseCacheUrl, type CacheUrl } from '@nixfarm/shared';

/** A cache uploads go to, with a short id that names it in job ids and staging directories. */
export interface UploadTarget extends CacheUrl {
  /** 12 hex digits of the URL's SHA-256: BullMQ job ids may not hold the URL's `:` */
  id: string;
}

function uploadTarget(cache: CacheUrl): UploadTarget {
  return { ...cache, id: createHash('sha256').update(cache.url).digest('hex').slice(0, 12) };
}

/** A URL from a request (`nixfarm push --to`): refused with a message naming it. */
export function parseUploadTarget(text: string): UploadTarget {
  const parsed = parseCacheUrl(text);
  if ('error' in parsed) throw new NixfarmError('invalid-cache-url', parsed.error);
  return uploadTarget(parsed);
}

/**
 * A file:// cache whose directory cannot be made or written is refused where
 * it is named (at the coordinator's start, or a push request), not found out
 * upload by upload. Remote caches are only known by trying: their faults are
 * each upload's own, retried.
 */
export async function checkUploadTarget(target: UploadTarget): Promise<void> {
  if (target.kind !== 'file') return;
  try {
    await mkdir(target.location, { recursive: true });
    await access(target.location, constants.W_OK);
  } catch (error) {
    const reason = error instanceof Error && 'code' in error ? String(error.code) : String(error);
    throw new NixfarmError(
      'cache-unwritable',
      `cache directory ${target.location} (from ${target.url}) cannot be written (${reason}): create it writable for the coordinator's user, or push elsewhere`,
    );
  }
}
