import path from 'node:path';
import { Command } from 'commander';
import { API_SCOPES, apiTokenPath, readApiTokenFile, type ApiScope } from '@nixfarm/shared';
import { ApiClient, ApiRequestError, DEFAULT_COORDINATOR_URL } from '../api-client.js';
import { DEFAULT_COORDINATOR_STATE } from '../api-token-source.js';
import { CliError, EXIT_USAGE } from '../exit-codes.js';

/**
 * `nixfarm dashboard [RUN]`: prints a link that opens the web dashboard
 * signed in, or with a run id that run's timeline (/runs/RUN). The token
 * rides in the link's fragment (#token=…), which browsers never send to a
 * server; the page trades it for its session cookie and drops it from the
 * address bar.
 */
export function dashboardCommand(): Command {
  return new Command('dashboard')
    .description(
      "print a link that opens the coordinator's web dashboard signed in, or a run's timeline (it holds a read token: share it as you would the token)",
    )
    .argument('[run]', "a run id: the link opens that run's timeline")
    .option('--coordinator <url>', 'coordinator HTTP API, as browsers reach it', DEFAULT_COORDINATOR_URL)
    .option('--state-dir <dir>', "the coordinator's state dir, where its tokens are (default $NIXFARM_STATE_DIR or ~/.local/state/nixfarm/coordinator)")
    .option('--scope <scope>', 'the token the link carries: read (enough to watch) or admin', 'read')
    .option('--token <token>', 'put this token in the link instead of one from the state dir')
    .addHelpText(
      'after',
      '\nExamples:\n  nixfarm dashboard\n  nixfarm dashboard mwt6nupe0fbb4523e4\n  nixfarm dashboard --coordinator http://farm.example.org:8420 --state-dir /var/lib/nixfarm',
    )
    .action(async (run: string | undefined, flags: { coordinator: string; stateDir?: string; scope: string; token?: string }) => {
      if (!(API_SCOPES as readonly string[]).includes(flags.scope))
        throw new CliError(`--scope takes ${API_SCOPES.join(' or ')}, got ${JSON.stringify(flags.scope)}`, EXIT_USAGE);
      const token = flags.token?.trim() || (await tokenFromStateDir(flags.stateDir, flags.scope as ApiScope));
      // Signing in checks both that the coordinator answers there and that it knows the token: the link printed works.
      const client = new ApiClient(flags.coordinator);
      try {
        await client.post('/api/session', { token });
      } catch (error) {
        if (error instanceof ApiRequestError) throw new CliError(`the coordinator at ${flags.coordinator} refused the token: ${error.message}`, EXIT_USAGE);
        throw error;
      }
      // A run the coordinator does not know would open a page saying so: say it here instead.
      if (run !== undefined) {
        try {
          await new ApiClient(flags.coordinator, token).getRun(run);
        } catch (error) {
          if (error instanceof ApiRequestError)
            throw new CliError(`no timeline for ${JSON.stringify(run)} at ${flags.coordinator}: ${error.message}`, EXIT_USAGE);
          throw error;
        }
      }
      const url = new URL(run === undefined ? '/' : `/runs/${encodeURIComponent(run)}`, flags.coordinator);
      url.hash = `token=${encodeURIComponent(token)}`;
      process.stdout.write(`${url.toString()}\n`);
    });
}

async function tokenFromStateDir(stateDirFlag: string | undefined, scope: ApiScope): Promise<string> {
  const stateDir = path.resolve(stateDirFlag ?? process.env.NIXFARM_STATE_DIR ?? DEFAULT_COORDINATOR_STATE);
  const file = apiTokenPath(stateDir, scope);
  let token: string | undefined;
  try {
    token = await readApiTokenFile(file);
  } catch (error) {
    throw new CliError(`${(error as Error).message} (or give --token)`, EXIT_USAGE);
  }
  if (token === undefined)
    throw new CliError(`${file} does not exist: run this on the coordinator's machine with its --state-dir, or give --token`, EXIT_USAGE);
  return token;
}
