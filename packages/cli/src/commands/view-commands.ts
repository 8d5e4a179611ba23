import { Command } from 'commander';
import type { ForgottenWorkerResponse, RunView, WorkerListing } from '@nixfarm/shared';
import { TOKEN_OPTION_HELP } from '../api-token-source.js';
import { ApiClient } from '../api-client.js';
import { buildCounts, evaluationSummary } from '../evaluation-text.js';

function client(flags: { coordinator?: string; token?: string }): Promise<ApiClient> {
  return ApiClient.connect(flags);
}

export function workersCommand(): Command {
  return new Command('workers')
    .description('list registered workers with their systems, features, load, free disk, last heartbeat, and whether they take builds (draining, paused)')
    .option('--coordinator <url>', 'coordinator HTTP API')
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', 'print JSON')
    .option(
      '--forget <name>',
      'take a gone worker (killed, its machine lost) out of the listing, the dashboard and the metrics; needs the admin token; a live worker is refused: stop it instead',
    )
    .addHelpText('after', '\nExamples:\n  nixfarm workers --json\n  nixfarm workers --forget builder-7')
    .action(async (flags: { coordinator?: string; token?: string; json?: boolean; forget?: string }) => {
      if (flags.forget !== undefined) return forget(await client(flags), flags.forget, flags.json === true);
      const { workers } = await (await client(flags)).get<{ workers: WorkerListing[] }>('/api/workers');
      if (flags.json) return void process.stdout.write(`${JSON.stringify(workers, null, 2)}\n`);
      for (const w of workers) {
        const age = ((Date.now() - w.heartbeatAt) / 1000).toFixed(0);
        const disk = w.freeDiskBytes === undefined ? '' : `  disk ${formatBytes(w.freeDiskBytes)} free`;
        process.stdout.write(
          `${w.name.padEnd(20)} ${w.alive ? 'up  ' : 'GONE'} ${String(w.running)}/${w.maxJobs} jobs  speed ${w.speedFactor}  ${w.systems.join(',')}  features: ${[...w.supportedFeatures, ...w.mandatoryFeatures.map((f) => `${f}!`)].join(',') || '-'}  heartbeat ${age}s ago${disk}${availability(w)}\n`,
        );
      }
    });
}

/** DELETE /api/workers/NAME; the coordinator's refusals (unknown, alive) end the command with exit 2 and its message. */
async function forget(api: ApiClient, name: string, json: boolean): Promise<void> {
  const answer = await api.delete<ForgottenWorkerResponse>(`/api/workers/${encodeURIComponent(name)}`);
  if (json) return void process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
  const last = answer.lastSeen;
  const seen =
    last === undefined ? '' : ` (last heartbeat ${((Date.now() - last.heartbeatAt) / 1000).toFixed(0)} s ago, ${last.running} build(s) running as of then)`;
  process.stdout.write(
    `forgot worker ${answer.name}${seen}: builds it held are requeued when their locks lapse; its name stays bound to its key, and it is listed again if it comes back\n`,
  );
}

/** Why a live worker takes no new builds, if it does not. */
function availability(w: WorkerListing): string {
  if (!w.alive) return '';
  if (w.draining === true) return '  DRAINING: takes no new builds, finishing or handing back its running ones';
  if (w.paused !== undefined) return `  PAUSED: takes no new builds: ${w.paused}`;
  return '';
}

function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function runsCommand(): Command {
  return new Command('runs')
    .description(
      'list recent runs, or show one run with the status of each derivation (and, for a jobset run, its evaluation progress and attribute build counts)',
    )
    .argument('[run]', 'a run id')
    .option('--coordinator <url>', 'coordinator HTTP API')
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExamples:\n  nixfarm runs\n  nixfarm runs lxk2f9a1b2c3d4e5 --json')
    .action(async (runId: string | undefined, flags: { coordinator?: string; token?: string; json?: boolean }) => {
      const api = await client(flags);
      if (runId === undefined) {
        const { runs } = await api.get<{ runs: RunView[] }>('/api/runs');
        if (flags.json) return void process.stdout.write(`${JSON.stringify(runs, null, 2)}\n`);
        for (const r of runs) {
          const counts = Object.entries(r.counts)
            .map(([s, n]) => `${n} ${s}`)
            .join(', ');
          const evaluation = r.evaluation === undefined ? '' : `  jobset evaluation ${evaluationSummary(r.evaluation)}`;
          process.stdout.write(`${r.id}  ${r.status.padEnd(9)}  ${new Date(r.createdAt).toISOString()}  ${r.total} drvs  ${counts}${evaluation}\n`);
        }
        return;
      }
      const run = await api.getRun(runId);
      const { derivations } = await api.get<{ derivations: Array<{ drvPath: string; status: string; worker?: string; error?: string }> }>(
        `/api/runs/${runId}/derivations`,
      );
      if (flags.json) return void process.stdout.write(`${JSON.stringify({ ...run, derivations }, null, 2)}\n`);
      process.stdout.write(`${run.id}  ${run.status}  ${run.total} derivations\n`);
      if (run.evaluation !== undefined) {
        process.stdout.write(`  evaluation: ${evaluationSummary(run.evaluation)}\n`);
        process.stdout.write(`  attribute builds: ${buildCounts(run.evaluation.builds)}\n`);
      }
      for (const d of derivations)
        process.stdout.write(`  ${d.status.padEnd(18)} ${d.drvPath}${d.worker ? `  on ${d.worker}` : ''}${d.error ? `  (${d.error})` : ''}\n`);
      if (run.checks !== undefined && run.checks.length > 0) {
        process.stdout.write('  checks (nixfarm diff DRV shows a difference):\n');
        for (const c of run.checks)
          process.stdout.write(
            `  ${c.state.padEnd(18)} ${c.drvPath}${c.checker === undefined ? '' : `  rebuilt on ${c.checker}`}${c.builder === undefined ? '' : `, built by ${c.builder}`}${c.error === undefined ? '' : `  (${c.error})`}\n`,
          );
      }
    });
}
