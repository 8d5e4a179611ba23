import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { API_SCOPES, ApiTokenFileError, apiTokenPath, createFileExclusive, readApiTokenFile, type ApiScope } from '@nixfarm/shared';

function newToken(scope: ApiScope): string {
  // The scope prefix lets an operator tell the two apart; the 32 random bytes are the secret.
  return `nixfarm_${scope}_${randomBytes(32).toString('base64url')}`;
}

/** Never half a token, and two processes starting at once agree on one: the one that created the file. */
async function createExclusive(file: string, token: string): Promise<void> {
  try {
    await createFileExclusive(file, `${token}\n`, 0o600);
  } catch (error) {
    throw new ApiTokenFileError(file, 'cannot create it', error);
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * The API's bearer tokens, one per scope. Tokens are compared as SHA-256
 * digests with timingSafeEqual: equal-length buffers, and no timing hint
 * about how much of a guess matched.
 */
export class ApiTokens {
  private readonly digests: ReadonlyArray<{ scope: ApiScope; digest: Buffer }>;

  constructor(tokens: Readonly<Record<ApiScope, string>>) {
    this.digests = API_SCOPES.map((scope) => ({ scope, digest: digest(tokens[scope]) }));
  }

  /** Loads the state dir's token files, creating a missing one with a fresh random token (0600). */
  static async loadOrCreate(stateDir: string): Promise<{ tokens: ApiTokens; files: Record<ApiScope, string> }> {
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    const values = {} as Record<ApiScope, string>;
    const files = {} as Record<ApiScope, string>;
    for (const scope of API_SCOPES) {
      const file = apiTokenPath(stateDir, scope);
      files[scope] = file;
      let token = await readApiTokenFile(file);
      if (token === undefined) {
        await createExclusive(file, newToken(scope));
        token = await readApiTokenFile(file);
        if (token === undefined) throw new ApiTokenFileError(file, 'it vanished right after it was created');
      }
      values[scope] = token;
    }
    if (values.admin === values.read) throw new ApiTokenFileError(files.read, `it holds the same token as ${files.admin}; give each scope its own token`);
    return { tokens: new ApiTokens(values), files };
  }

  /** The scope a presented token grants, or undefined for an unknown one. Every digest is compared, match or not. */
  scopeOf(token: string): ApiScope | undefined {
    const presented = digest(token);
    let granted: ApiScope | undefined;
    for (const { scope, digest: known } of this.digests) {
      if (timingSafeEqual(presented, known)) granted = scope;
    }
    return granted;
  }
}

/** Whether a token of scope `held` may use a route needing `needed`. */
export function scopeAllows(held: ApiScope, needed: ApiScope): boolean {
  return held === 'admin' || needed === 'read';
}
