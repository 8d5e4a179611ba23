import { readlink } from 'node:fs/promises';
import { Command } from 'commander';
import { STORE_DIR } from '@nixfarm/shared';
import type { WhyAnswer } from '@nixfarm/coordinator';
import { TOKEN_OPTION_HELP } from '../api-token-source.js';
import { ApiClient, ApiRequestError } from '../api-client.js';
import { CliError, EXIT_USAGE } from '../exit-codes.js';

/** `./result` (a symlink nix-build or nixfarm left) stands for the store path it points to. */
export async function resolveLocalSymlink(arg: string): Promise<string> {
  if (arg.startsWith(`${STORE_DIR}/`)) return arg;
  try {
    const target = await readlink(arg);
    return target.startsWith(`${STORE_DIR}/`) ? target : arg;
  } catch {
    return arg;
  }
}

export function whyCommand(): Command {
  return new Command('why')
    .description('explain why a derivation is waiting, queued, running or how it ended: the inputs it waits for, or each worker and why it has not taken it')
    .argument('<derivation>', 'a .drv path, an output path (or a ./result symlink), or a unique prefix of a hash part')
    .option('--coordinator <url>', 'coordinator HTTP API')
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      [
        '',
        'Exit status: 0 explained, 2 not found, ambiguous or not a valid argument.',
        '',
        'Examples:',
        '  nixfarm why /nix/store/0c5x...-hello-2.12.drv',
        '  nixfarm why /nix/store/9aqw...-hello-2.12',
        '  nixfarm why 0c5x4q        # a hash prefix',
        '  nixfarm why ./result --json',
      ].join('\n'),
    )
    .action(async (arg: string, flags: { coordinator?: string; token?: string; json?: boolean }) => {
      const target = await resolveLocalSymlink(arg);
      const { formatExplanation, parseWhyQuery } = await import('@nixfarm/coordinator');
      parseWhyQuery(target); // the store-path grammar or the hash alphabet, before anything is sent
      const api = await ApiClient.connect(flags);
      let answer: WhyAnswer;
      try {
        answer = await api.get<WhyAnswer>(`/api/why?path=${encodeURIComponent(target)}`);
      } catch (error) {
        if (error instanceof ApiRequestError) throw new CliError(error.message, EXIT_USAGE);
        throw error;
      }
      process.stdout.write(flags.json ? `${JSON.stringify(answer, null, 2)}\n` : formatExplanation(answer));
    });
}
