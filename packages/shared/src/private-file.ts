import { readFile, stat } from 'node:fs/promises';

/** How a private file's reader says it will not use the file: its own error class, with the reason (and the cause, if any). */
export type PrivateFileRefusal = (reason: string, cause?: unknown) => Error;

export interface ReadPrivateFileOptions {
  /** what the file is, for "give the … itself" when the path is not a regular file */
  what: string;
  /** added to the chmod advice (e.g. "or delete it to have a new one made") */
  modeHint?: string;
}

/**
 * A secret file's text (a token, a signing key), refused when group or
 * others may read or write it, as sshd refuses loose key files: a leaked
 * secret is a leaked farm. Undefined when the file does not exist: whether
 * that is an error is the caller's to say.
 */
export async function readPrivateFile(file: string, refuse: PrivateFileRefusal, options: ReadPrivateFileOptions): Promise<string | undefined> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw refuse('cannot stat it', error);
  }
  if (!info.isFile()) throw refuse(`it is not a regular file; give the ${options.what} itself`);
  const mode = Number(info.mode);
  if ((mode & 0o077) !== 0) {
    const hint = options.modeHint === undefined ? '' : ` (${options.modeHint})`;
    throw refuse(`its mode is ${(mode & 0o777).toString(8).padStart(3, '0')}, so group or others can read or write it; chmod 600 ${file}${hint}`);
  }
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw refuse('cannot read it', error);
  }
}
