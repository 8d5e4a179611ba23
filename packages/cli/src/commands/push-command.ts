import { Command } from 'commander';
import { parseCacheUrl, type UploadRecord } from '@nixfarm/shared';
import { TOKEN_OPTION_HELP } from '../api-token-source.js';
import { ApiClient } from '../api-client.js';
import { collect } from '../config-loader.js';
import { CliError, EXIT_BUILD_FAILED } from '../exit-codes.js';

const NOT_DONE = new Set(['pending', 'retrying']);

function printUploads(uploads: readonly UploadRecord[]): void {
  for (const u of uploads) process.stdout.write(`${u.state.padEnd(9)} ${u.path} -> ${u.target}${u.error === undefined ? '' : `\n          ${u.error}`}\n`);
}

export function pushCommand(): Command {
  return new Command('push')
    .description("upload a run's outputs (with their closures and signatures) to external binary caches, through the coordinator's upload queue")
    .argument('<run>', 'the run id (printed by nixfarm build, listed by nixfarm runs)')
    .option('--to <url>', 'cache to upload to: file:///dir, http(s)://host/path or s3://bucket?endpoint=...&region=..., repeatable', collect)
    .option('--wait', 'wait until every upload is done or given up; exit 1 if one was given up')
    .option('--coordinator <url>', 'coordinator HTTP API')
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', "print the run's uploads as JSON")
    .addHelpText('after', '\nExample:\n  nixfarm push mwt6xsw529593a48d6 --to file:///var/cache/nix --to s3://cache?region=eu-west-1')
    .action(async (runId: string, flags: { to?: string[]; wait?: boolean; coordinator?: string; token?: string; json?: boolean }) => {
      const targets = flags.to ?? [];
      if (targets.length === 0) throw new CliError('nixfarm push needs at least one --to URL: the cache to upload to');
      for (const target of targets) {
        const parsed = parseCacheUrl(target);
        if ('error' in parsed) throw new CliError(`--to: ${parsed.error}`);
      }
      const api = await ApiClient.connect(flags);
      const path = `/api/runs/${encodeURIComponent(runId)}/uploads`;
      let { uploads } = await api.post<{ uploads: UploadRecord[] }>(path, { targets });
      while (flags.wait && uploads.some((u) => NOT_DONE.has(u.state))) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        ({ uploads } = await api.get<{ uploads: UploadRecord[] }>(path));
      }
      if (flags.json) process.stdout.write(`${JSON.stringify({ uploads }, null, 2)}\n`);
      else printUploads(uploads);
      if (flags.wait && uploads.some((u) => u.state === 'given-up')) process.exitCode = EXIT_BUILD_FAILED;
    });
}
