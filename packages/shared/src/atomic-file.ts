import { randomBytes } from 'node:crypto';
import { link, rename, unlink, writeFile } from 'node:fs/promises';

/** A temporary name beside `path` (same directory, so same file system) that no other writer picks. */
function tempBeside(path: string): string {
  return `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
}

/**
 * Replaces `path` with `data` atomically: a reader sees the old file or the
 * new one, never half of one (write a temporary file beside it, then rename).
 * `mode` applies to the new file (default: 0o666 less the umask).
 */
export async function writeFileAtomic(path: string, data: string, mode?: number): Promise<void> {
  const temp = tempBeside(path);
  await writeFile(temp, data, mode === undefined ? undefined : { mode });
  try {
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
}

/**
 * Creates `path` holding `data` unless it exists (write a temporary file,
 * then hard-link it): never half a file, and of two processes creating it at
 * once exactly one wins. Returns whether this call created it; when it did
 * not, the file another writer made is left as it is.
 */
export async function createFileExclusive(path: string, data: string, mode = 0o600): Promise<boolean> {
  const temp = tempBeside(path);
  await writeFile(temp, data, { mode, flag: 'wx' });
  try {
    await link(temp, path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}
