import { Command } from 'commander';
import type { RunView } from '@nixfarm/shared';
import { TOKEN_OPTION_HELP } from '../api-token-source.js';
import { ApiClient } from '../api-client.js';

export function cancelCommand(): Command {
  return new Command('cancel')
    .description('cancel a run: its queued builds are dropped and its running builds stopped, unless another run still needs them')
    .argument('<run>', 'the run id (printed by nixfarm build, listed by nixfarm runs)')
    .option('--coordinator <url>', 'coordinator HTTP API')
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', 'print the cancelled run as JSON')
    .addHelpText('after', '\nExample:\n  nixfarm cancel mwt6xsw529593a48d6')
    .action(async (runId: string, flags: { coordinator?: string; token?: string; json?: boolean }) => {
      const api = await ApiClient.connect(flags);
      const run = await api.post<RunView>(`/api/runs/${encodeURIComponent(runId)}/cancel`);
      if (flags.json) return void process.stdout.write(`${JSON.stringify(run, null, 2)}\n`);
      process.stdout.write(`run ${run.id}: ${run.status}\n`);
    });
}
