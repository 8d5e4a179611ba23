import path from 'node:path';
import { NixfarmError } from './errors.js';
import { readPrivateFile } from './private-file.js';

/** read: every GET; admin: also submitting and cancelling runs. Admin implies read. */
export type ApiScope = 'read' | 'admin';
export const API_SCOPES: readonly ApiScope[] = ['read', 'admin'];

/** One file per scope in the coordinator's state dir, so one can be handed out without the other. */
const API_TOKEN_FILES: Readonly<Record<ApiScope, string>> = { admin: 'api-token-admin', read: 'api-token-read' };

export function apiTokenPath(stateDir: string, scope: ApiScope): string {
  return path.join(stateDir, API_TOKEN_FILES[scope]);
}

/** A token file the coordinator will not use: unreadable, malformed, or open to group or others. */
export class ApiTokenFileError extends NixfarmError {
  constructor(file: string, reason: string, cause?: unknown) {
    super('invalid-api-token-file', `cannot use API token file ${file}: ${reason}`, { retryable: false, cause });
  }
}

const TOKEN_PATTERN = /^[A-Za-z0-9._~+/=-]{16,512}$/;

/**
 * Reads a token file, refusing one group or others may read or write (a
 * leaked token is a leaked farm, as sshd refuses loose key files).
 * Returns undefined when the file does not exist.
 */
export async function readApiTokenFile(file: string): Promise<string | undefined> {
  const text = await readPrivateFile(file, (reason, cause) => new ApiTokenFileError(file, reason, cause), {
    what: 'token file',
    modeHint: 'or delete it to have a new token made',
  });
  if (text === undefined) return undefined;
  const token = text.trim();
  if (!TOKEN_PATTERN.test(token))
    throw new ApiTokenFileError(file, 'it does not hold one token (16-512 letters, digits or -._~+/=); delete it to have a new one made');
  return token;
}
