import { Command } from 'commander';
import { describeCheckState, type CheckView } from '@nixfarm/shared';
import { TOKEN_OPTION_HELP } from '../api-token-source.js';
import { ApiClient, ApiRequestError } from '../api-client.js';
import { CliError, EXIT_USAGE } from '../exit-codes.js';
import { resolveLocalSymlink } from './why-command.js';

/**
 * `nixfarm diff DRV`: how a derivation's latest reproducibility check went
 * and, when its rebuild differed, the report of the difference (diffoscope's
 * or nixfarm's file listing with text diffs) on stdout.
 */
export function diffCommand(): Command {
  return new Command('diff')
    .description("show how a derivation's rebuild on another worker differed from the coordinator's copy (its latest reproducibility check)")
    .argument('<derivation>', 'a .drv path, an output path (or a ./result symlink), or a unique prefix of a hash part')
    .option('--coordinator <url>', 'coordinator HTTP API')
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', 'print the check (state, builder, checker, NAR hashes, summary) as JSON instead of the report')
    .addHelpText(
      'after',
      '\nExamples:\n  nixfarm build ./release.nix -A hello --check\n  nixfarm diff ./result\n  nixfarm diff /nix/store/0avza8c1mjsv65fq6104aj3zkqjml7pk-hello.drv --json\n\nExit codes: 0 the report (or the check, with --json) printed, or the check found no difference; 1 the check has not ended or could not finish; 2 no check of it, or a connection error.',
    )
    .action(async (arg: string, flags: { coordinator?: string; token?: string; json?: boolean }) => {
      const target = await resolveLocalSymlink(arg);
      const { parseWhyQuery } = await import('@nixfarm/coordinator');
      parseWhyQuery(target); // the store-path grammar or the hash alphabet, before anything is sent
      const api = await ApiClient.connect(flags);
      const path = `/api/checks/${encodeURIComponent(target)}`;
      let check: CheckView;
      try {
        check = await api.get<CheckView>(path);
      } catch (error) {
        if (error instanceof ApiRequestError) throw new CliError(error.message, EXIT_USAGE);
        throw error;
      }
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(check, null, 2)}\n`);
        return;
      }
      const where = `${check.checker === undefined ? '' : ` on ${check.checker}`}${check.builder === undefined ? '' : ` (built by ${check.builder})`}`;
      switch (check.state) {
        case 'reproducible':
          process.stderr.write(`${check.drvPath}: reproducible: rebuilt${where} with the same NAR hashes\n`);
          return;
        case 'not-reproducible':
          if (check.diff === undefined) {
            process.stderr.write(
              `${check.drvPath}: not reproducible, rebuilt${where}; no copy came back to compare (${check.error ?? 'see the NAR hashes'})\n`,
            );
            for (const o of check.outputs.filter((o) => o.differs === true))
              process.stdout.write(`${o.path}\n  coordinator: ${o.expected}\n  rebuild:     ${o.actual}\n`);
            return;
          }
          process.stdout.write(await api.getText(`${path}/diff`));
          return;
        case 'waiting':
        case 'queued':
        case 'running':
        case 'failed':
        case 'skipped':
        case 'cancelled':
          process.stderr.write(
            `${check.drvPath}: check ${check.state}, ${describeCheckState(check.state)}${check.error === undefined ? '' : `: ${check.error}`}\n`,
          );
          process.exitCode = 1;
          return;
      }
    });
}
