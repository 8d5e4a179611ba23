import os from 'node:os';
import path from 'node:path';
import { ApiTokenFileError, apiTokenPath, readApiTokenFile } from '@nixfarm/shared';
import { CliError } from './exit-codes.js';

/** Where the coordinator keeps its state by default; its token files are there. */
export const DEFAULT_COORDINATOR_STATE = path.join(os.homedir(), '.local', 'state', 'nixfarm', 'coordinator');

export const TOKEN_OPTION_HELP =
  "API token (default $NIXFARM_TOKEN, else the admin token in the coordinator's state dir $NIXFARM_STATE_DIR or ~/.local/state/nixfarm/coordinator when readable)";

/**
 * The token the CLI sends: --token, else NIXFARM_TOKEN, else the coordinator's
 * own token file when this user can read it (handy on the coordinator's
 * machine, as `nixfarm worker --join` reads its coordinator.json). Undefined
 * when there is none: the coordinator's 401 then says how to give one.
 */
export async function resolveApiToken(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  if (flag !== undefined && flag.trim() !== '') return flag.trim();
  const fromEnv = env.NIXFARM_TOKEN?.trim();
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const stateDir = path.resolve(env.NIXFARM_STATE_DIR ?? DEFAULT_COORDINATOR_STATE);
  for (const scope of ['admin', 'read'] as const) {
    try {
      const token = await readApiTokenFile(apiTokenPath(stateDir, scope));
      if (token !== undefined) return token;
    } catch (error) {
      // Another user's coordinator: not ours to read, so not a token source.
      if (error instanceof ApiTokenFileError && (error.cause as NodeJS.ErrnoException | undefined)?.code === 'EACCES') continue;
      throw new CliError(`${(error as Error).message} (or give --token / NIXFARM_TOKEN)`);
    }
  }
  return undefined;
}
