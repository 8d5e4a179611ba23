import { Command, CommanderError } from 'commander';
import { NixfarmError, RedisWaitAbortedError } from '@nixfarm/shared';
import { CliError, EXIT_USAGE } from './exit-codes.js';
import { ApiRequestError } from './api-client.js';
import { coordinatorCommand } from './commands/coordinator-command.js';
import { workerCommand } from './commands/worker-command.js';
import { buildCommand, runBuild } from './commands/build-command.js';
import { apiTokenCommand, authorizeCommand, cacheKeyCommand, workerKeyCommand } from './commands/key-commands.js';
import { dashboardCommand } from './commands/dashboard-command.js';
import { runsCommand, workersCommand } from './commands/view-commands.js';
import { whyCommand } from './commands/why-command.js';
import { logCommand } from './commands/log-command.js';
import { cancelCommand } from './commands/cancel-command.js';
import { pushCommand } from './commands/push-command.js';
import { diffCommand } from './commands/diff-command.js';
import { checksCommand } from './commands/checks-command.js';
import { runWait, waitCommand } from './commands/wait-command.js';
import { statusCommand } from './commands/status-command.js';
import { redisAclCommand } from './commands/redis-acl-command.js';

export function program(): Command {
  return new Command('nixfarm')
    .description('nixfarm: a distributed build coordinator for Nix')
    .addCommand(coordinatorCommand())
    .addCommand(workerCommand())
    .addCommand(buildCommand())
    .addCommand(waitCommand())
    .addCommand(authorizeCommand())
    .addCommand(workerKeyCommand())
    .addCommand(apiTokenCommand())
    .addCommand(cacheKeyCommand())
    .addCommand(redisAclCommand())
    .addCommand(statusCommand())
    .addCommand(dashboardCommand())
    .addCommand(workersCommand())
    .addCommand(runsCommand())
    .addCommand(whyCommand())
    .addCommand(logCommand())
    .addCommand(cancelCommand())
    .addCommand(pushCommand())
    .addCommand(diffCommand())
    .addCommand(checksCommand())
    .addHelpText('after', '\nQuick start: npm run demo\nEach command has --help with an example.')
    .exitOverride()
    .showHelpAfterError();
}

/** Entry point: returns the process exit code; errors become one clear message. */
export async function main(argv: readonly string[]): Promise<number> {
  try {
    const help = argv.includes('--help') || argv.includes('-h');
    // These two end with the run's outcome as their exit code, so they run outside commander's action flow.
    if (argv[0] === 'build' && !help) return await runBuild(argv.slice(1));
    if (argv[0] === 'wait' && !help) return await runWait(argv.slice(1));
    await program().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : EXIT_USAGE;
    if (error instanceof ApiRequestError) {
      process.stderr.write(`nixfarm: the coordinator answered ${error.status} (${error.code}): ${error.message}\n`);
      return EXIT_USAGE;
    }
    if (error instanceof RedisWaitAbortedError) {
      // Asked to stop before it ever started: a clean exit, not a failure.
      process.stderr.write(`nixfarm: ${error.message}\n`);
      return 0;
    }
    if (error instanceof CliError) {
      process.stderr.write(`nixfarm: ${error.message}\n`);
      return error.exitCode;
    }
    if (error instanceof NixfarmError) {
      process.stderr.write(`nixfarm: ${error.message}\n`);
      return EXIT_USAGE;
    }
    process.stderr.write(`nixfarm: unexpected error: ${(error as Error).stack ?? String(error)}\n`);
    return 1;
  }
}
