// `npm run chaos`: every chaos scenario, each on fresh farms from real parts
// (Redis, Nix, the SSH endpoint, workers in simulated machines), several
// times; prints a table and writes bench/results/chaos-<time>.{json,txt}.
// Exits 1 if any run lost a derivation, built one twice with different
// results, or did not recover within its scenario's bound.
//
//   npm run chaos                                   every scenario, 3 runs, full size
//   npm run chaos -- --runs 5 --only network-cut,redis-restart
//   npm run chaos -- --size small                   the sizes the e2e suite uses
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../harness/test-farm.js';
import { outcomeProblems, type ChaosScenario, type ScenarioOutcome, type ScenarioSize } from './chaos-scenario.js';
import { CHAOS_SCENARIOS } from './scenarios/index.js';

interface RunRecord {
  run: number;
  ms: number;
  outcome?: ScenarioOutcome;
  /** why the run failed: problems of its outcome, or the error that ended it */
  problems: string[];
}

interface ScenarioReport {
  name: string;
  description: string;
  recoveryBoundSeconds: number;
  runs: RunRecord[];
}

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    only: { type: 'string' },
    size: { type: 'string', default: 'full' },
    'log-level': { type: 'string', default: 'info' },
  },
});

function usage(message: string): never {
  process.stderr.write(
    `run-chaos: ${message}\nusage: npm run chaos -- [--runs N] [--only ${CHAOS_SCENARIOS.map((s) => s.name).join(',')}] [--size small|full] [--log-level L]\n`,
  );
  process.exit(2);
}

const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) usage(`--runs takes a whole number >= 1, got ${JSON.stringify(values.runs)}`);
const size = values.size as ScenarioSize;
if (size !== 'small' && size !== 'full') usage(`--size takes small or full, got ${JSON.stringify(values.size)}`);
const wanted = values.only
  ?.split(',')
  .map((s) => s.trim())
  .filter((s) => s.length > 0);
for (const name of wanted ?? []) if (!CHAOS_SCENARIOS.some((s) => s.name === name)) usage(`no scenario named ${JSON.stringify(name)}`);
const scenarios = CHAOS_SCENARIOS.filter((s) => wanted === undefined || wanted.includes(s.name));

const say = (line: string) => process.stderr.write(`${line}\n`);

async function runScenario(scenario: ChaosScenario): Promise<ScenarioReport> {
  const report: ScenarioReport = { name: scenario.name, description: scenario.description, recoveryBoundSeconds: scenario.recoveryBoundSeconds, runs: [] };
  for (let run = 1; run <= runs; run++) {
    say(`== ${scenario.name} ${run}/${runs}: ${scenario.description}`);
    const started = Date.now();
    try {
      const outcome = await scenario.run({ size, logLevel: values['log-level'], progress: (l) => say(`   ${l}`) });
      const problems = outcomeProblems(scenario, outcome);
      report.runs.push({ run, ms: Date.now() - started, outcome, problems });
      say(
        `   ${problems.length === 0 ? 'ok' : `FAILED: ${problems.join('; ')}`} — ${outcome.derivations} derivations, recovered in ${seconds(outcome.recoveredMs)}; ${outcome.notes.join('; ')}`,
      );
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      report.runs.push({ run, ms: Date.now() - started, problems: [`the scenario failed: ${message}`] });
      say(`   FAILED: ${message.slice(0, 4000)}`);
    }
  }
  return report;
}

function seconds(ms: number | undefined): string {
  return ms === undefined ? '—' : `${(ms / 1000).toFixed(1)} s`;
}

function table(reports: readonly ScenarioReport[]): string {
  const header = ['scenario', 'runs', 'derivations', 'lost', 'built twice (different)', 'recovered within', 'bound', 'result'];
  const rows = reports.map((r) => {
    const outcomes = r.runs.flatMap((x) => (x.outcome === undefined ? [] : [x.outcome]));
    const failed = r.runs.filter((x) => x.problems.length > 0).length;
    const recovered = outcomes.map((o) => o.recoveredMs).filter((ms): ms is number => ms !== undefined);
    return [
      r.name,
      String(r.runs.length),
      String(outcomes.reduce((n, o) => n + o.derivations, 0)),
      String(outcomes.reduce((n, o) => n + o.lost.length, 0)),
      `${outcomes.reduce((n, o) => n + o.builtTwice, 0)} (${outcomes.reduce((n, o) => n + o.builtTwiceDifferent, 0)})`,
      recovered.length === 0 ? '—' : seconds(Math.max(...recovered)),
      `${r.recoveryBoundSeconds} s`,
      failed === 0 ? 'ok' : `${failed} FAILED`,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

const startedAt = new Date();
const reports: ScenarioReport[] = [];
for (const scenario of scenarios) reports.push(await runScenario(scenario));
const text = [
  `nixfarm chaos, ${startedAt.toISOString()}: ${runs} run(s) per scenario, size ${size}`,
  '',
  table(reports),
  '',
  'lost: derivations not ended succeeded, or whose outputs are invalid or fail nix-store --verify-path in the coordinator store.',
  'built twice (different): derivations reported built successfully more than once (of those, with different NAR hashes).',
  'recovered within: the slowest run, from the fault to the farm working again (each scenario says what that means).',
  ...reports.flatMap((r) => r.runs.filter((x) => x.problems.length > 0).map((x) => `${r.name} run ${x.run}: ${x.problems.join('; ')}`)),
].join('\n');
process.stdout.write(`${text}\n`);
const dir = join(REPO_ROOT, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
writeFileSync(join(dir, `chaos-${stamp}.json`), `${JSON.stringify({ startedAt, runs, size, reports }, null, 2)}\n`);
writeFileSync(join(dir, `chaos-${stamp}.txt`), `${text}\n`);
process.exitCode = reports.some((r) => r.runs.some((x) => x.problems.length > 0)) ? 1 : 0;
