import { Command } from 'commander';
import { TOKEN_OPTION_HELP } from '../api-token-source.js';
import { ApiClient } from '../api-client.js';
import { DEFAULT_COORDINATOR_URL, followRunToEnd } from './build-command.js';

export function waitCommand(): Command {
  return new Command('wait')
    .description(
      'follow a run started earlier (by another nixfarm build, or before a restart) until it ends, like nixfarm build: progress on stderr, output paths on stdout',
    )
    .argument('<run>', 'the run id (printed by nixfarm build, listed by nixfarm runs)')
    .option('--coordinator <url>', `coordinator HTTP API (default ${DEFAULT_COORDINATOR_URL}, or $NIXFARM_COORDINATOR)`)
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', 'print the finished run as JSON on stdout instead of output paths')
    .addHelpText(
      'after',
      '\nExample:\n  nixfarm wait mwt6xsw529593a48d6\n\nExit codes: 0 built, 1 a build failed or the run was cancelled, 2 usage or connection error.',
    )
    .action(async () => undefined);
}

/** Runs `nixfarm wait`; like `nixfarm build`, its exit code says how the run ended. */
export async function runWait(argv: readonly string[]): Promise<number> {
  const command = waitCommand();
  command.exitOverride();
  command.parse(argv, { from: 'user' });
  const flags = command.opts<{ coordinator?: string; token?: string; json?: boolean }>();
  const client = await ApiClient.connect(flags);
  const run = await client.getRun(command.args[0]!);
  process.stderr.write(`nixfarm: run ${run.id}: ${run.status}, ${run.total} derivation${run.total === 1 ? '' : 's'}\n`);
  return followRunToEnd(client, run, { json: flags.json ?? false });
}
