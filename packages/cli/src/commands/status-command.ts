import { Command } from 'commander';
import { farmStatusSchema, formatZodError, type FarmStatus } from '@nixfarm/shared';
import { TOKEN_OPTION_HELP } from '../api-token-source.js';
import { ApiClient } from '../api-client.js';
import { CliError, EXIT_USAGE } from '../exit-codes.js';
import { attributeCounts, buildCounts } from '../evaluation-text.js';

export function statusCommand(): Command {
  return new Command('status')
    .description(
      'the farm at a glance: each queue (waiting, running, oldest wait), each worker (up or gone, load, draining or paused, heartbeat age), active runs with the progress of those evaluating a jobset, and how many more workers each system needs',
    )
    .option('--coordinator <url>', 'coordinator HTTP API')
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', 'print JSON (the same numbers as GET /metrics)')
    .addHelpText('after', '\nExamples:\n  nixfarm status\n  nixfarm status --json')
    .action(async (flags: { coordinator?: string; token?: string; json?: boolean }) => {
      const raw = await (await ApiClient.connect(flags)).get<unknown>('/api/status');
      const parsed = farmStatusSchema.safeParse(raw);
      if (!parsed.success)
        throw new CliError(
          `the coordinator's status is not what this CLI understands (an older or newer coordinator?): ${formatZodError(parsed.error, 'status')}`,
          EXIT_USAGE,
        );
      if (flags.json) return void process.stdout.write(`${JSON.stringify(parsed.data, null, 2)}\n`);
      process.stdout.write(formatStatus(parsed.data));
    });
}

/** The text view: three short tables. */
function formatStatus(status: FarmStatus): string {
  const out: string[] = [];
  out.push(`Runs: ${status.activeRuns} active, ${status.evaluating.length} evaluating a jobset`);
  for (const { runId, evaluation: e } of status.evaluating) {
    out.push(`  ${runId}  evaluating for ${duration(e.elapsedMs / 1000)} at ${e.attributesPerSecond.toFixed(2)} attributes/s: ${attributeCounts(e)}`);
    out.push(`  ${' '.repeat(runId.length)}  attribute builds: ${buildCounts(e.builds)}`);
  }
  out.push('');
  out.push('Queues:');
  if (status.queues.length === 0) out.push('  (none)');
  else {
    out.push(
      table([
        ['QUEUE', 'WAITING', 'RUNNING', 'OLDEST WAIT'],
        ...status.queues.map((q) => [q.name, String(q.waiting), String(q.running), q.waiting === 0 ? '-' : duration(q.oldestWaitSeconds)]),
      ]),
    );
  }
  out.push('');
  out.push('Workers:');
  if (status.workers.length === 0) out.push('  (none registered)');
  else {
    out.push(
      table([
        ['WORKER', 'STATE', 'JOBS', 'HEARTBEAT', 'SYSTEMS'],
        ...status.workers.map((w) => [w.name, state(w), `${w.running}/${w.maxJobs}`, `${duration(w.heartbeatAgeSeconds)} ago`, w.systems.join(',')]),
      ]),
    );
  }
  out.push('');
  out.push('Scaling (more workers needed per system):');
  if (status.scaling.length === 0) out.push('  (no work and no workers)');
  else {
    out.push(
      table([
        ['SYSTEM', 'WAITING', 'FREE SLOTS', 'UNSERVED', 'WORKERS NEEDED'],
        ...status.scaling.map((s) => [s.system, String(s.waiting), String(s.freeSlots), String(s.unserved), String(s.workersNeeded)]),
      ]),
    );
  }
  return `${out.join('\n')}\n`;
}

function state(w: FarmStatus['workers'][number]): string {
  if (!w.up) return 'GONE';
  if (w.draining) return 'draining';
  if (w.paused !== undefined) return `paused (${w.paused})`;
  return 'up';
}

function duration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.floor(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

function table(rows: readonly string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => `  ${r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')}`).join('\n');
}
