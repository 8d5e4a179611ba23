import { Command } from 'commander';
import { derivationName, type CheckView, type ChecksOverview } from '@nixfarm/shared';
import { TOKEN_OPTION_HELP } from '../api-token-source.js';
import { ApiClient } from '../api-client.js';
import { integer } from '../config-loader.js';
import { CliError } from '../exit-codes.js';

function line(c: CheckView): string {
  const where = c.checker === undefined ? '' : ` rebuilt on ${c.checker}`;
  const by = c.builder === undefined ? '' : ` (built by ${c.builder})`;
  const diff = c.diff === undefined ? '' : `: ${c.diff.changed} changed, ${c.diff.added} added, ${c.diff.removed} removed`;
  return `${c.state.padEnd(16)} ${derivationName(c.drvPath)}${where}${by}${diff}${c.error === undefined || c.state === 'reproducible' ? '' : ` (${c.error})`}\n  ${c.drvPath}\n`;
}

/** `nixfarm checks`: the farm's reproducibility checks, as the dashboard's panel. */
export function checksCommand(): Command {
  return new Command('checks')
    .description('reproducibility checks: how many ended each way, the newest mismatches and the newest checks')
    .option('--limit <n>', 'how many of the newest mismatches and checks (default 10)', integer('--limit'))
    .option('--coordinator <url>', 'coordinator HTTP API')
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', 'print the overview as JSON')
    .addHelpText('after', '\nExamples:\n  nixfarm checks\n  nixfarm checks --limit 50 --json')
    .action(async (flags: { limit?: number; coordinator?: string; token?: string; json?: boolean }) => {
      const limit = flags.limit ?? 10;
      if (limit < 1 || limit > 500) throw new CliError(`--limit takes 1 to 500, got ${limit}`);
      const api = await ApiClient.connect(flags);
      const overview = await api.get<ChecksOverview>(`/api/checks?limit=${limit}`);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(overview, null, 2)}\n`);
        return;
      }
      const c = overview.counts;
      const sampling = overview.fraction > 0 ? `sampling ${overview.fraction * 100}% of builds` : "no background sampling (the coordinator's --check-fraction)";
      process.stdout.write(
        `${c.reproducible} reproducible, ${c['not-reproducible']} not reproducible, ${c.failed} could not finish, ${c.skipped} skipped, ${c.cancelled} cancelled; ${c.waiting + c.queued + c.running} pending; ${sampling}\n`,
      );
      process.stdout.write(overview.mismatches.length === 0 ? '\nno check found a difference\n' : '\nnewest mismatches (nixfarm diff DRV shows each):\n');
      for (const m of overview.mismatches) process.stdout.write(line(m));
      if (overview.recent.length > 0) process.stdout.write('\nnewest checks:\n');
      for (const r of overview.recent) process.stdout.write(line(r));
    });
}
