/**
 * Evaluation of a generated 2,000-attribute jobset: the evaluator pool with
 * 1 and 2 evaluators against one nix-instantiate of the whole set. Every
 * way gets a fresh salt, so each writes 2,000 new .drv files.
 *
 *   npm run build && node test/dist/bench/jobset-eval-bench.js [attributes] [rounds]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { JobsetEvaluation } from '@nixfarm/coordinator';
import { jobsetFixture } from '../harness/jobset-fixture.js';
import { freshSalt } from '../harness/nix-fixtures.js';

const attributes = Number(process.argv[2] ?? 2000);
const rounds = Number(process.argv[3] ?? 3);
const fixture = jobsetFixture({ top: attributes - 1, recursed: 0, nested: 0, plain: 0, withFailures: false });
const quiet = pino({ level: 'silent' });

async function pool(workers: number, maxBatchSize: number): Promise<{ seconds: number; firstResult: number; count: number }> {
  const started = performance.now();
  const evaluation = await JobsetEvaluation.open({
    source: { file: fixture.file, argstrs: [{ name: 'salt', value: freshSalt() }] },
    logger: quiet,
    nixOptions: [['substituters', '']],
    evalWorkers: workers,
    maxBatchSize,
  });
  let firstResult = 0;
  let count = 0;
  for await (const result of evaluation.results()) {
    if (count++ === 0) firstResult = (performance.now() - started) / 1000;
    if ('error' in result) throw new Error(`${result.attr}: ${result.error}`);
  }
  const seconds = (performance.now() - started) / 1000;
  await evaluation.close();
  return { seconds, firstResult, count };
}

function whole(rootDir?: string): { seconds: number; count: number } {
  const started = performance.now();
  // no -A: nix-instantiate instantiates every derivation of the top set, in one process
  const roots = rootDir === undefined ? [] : ['--add-root', join(rootDir, 'root'), '--indirect'];
  const args = [fixture.file, '--argstr', 'salt', freshSalt(), ...roots, '--option', 'substituters', ''];
  const run = spawnSync('nix-instantiate', args, { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(run.stderr);
  return { seconds: (performance.now() - started) / 1000, count: run.stdout.split('\n').filter((l) => l !== '').length };
}

const rows: Array<{ way: string; runs: Array<{ seconds: number; firstResult?: number; count: number }> }> = [
  { way: 'one nix-instantiate of the whole set', runs: [] },
  { way: 'the same, with a GC root per .drv', runs: [] },
  { way: 'pool, evalWorkers 1, batches <= 100', runs: [] },
  { way: 'pool, evalWorkers 2, batches <= 100', runs: [] },
  { way: 'pool, evalWorkers 2, batches <= 500', runs: [] },
];
for (let round = 0; round < rounds; round++) {
  rows[0]!.runs.push(whole());
  const rootDir = mkdtempSync(join(tmpdir(), 'nixfarm-bench-roots-'));
  rows[1]!.runs.push(whole(rootDir));
  rmSync(rootDir, { recursive: true, force: true });
  rows[2]!.runs.push(await pool(1, 100));
  rows[3]!.runs.push(await pool(2, 100));
  rows[4]!.runs.push(await pool(2, 500));
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
process.stdout.write(`jobset of ${attributes} attributes, ${rounds} rounds (median; fresh .drv files each run)\n`);
for (const { way, runs } of rows) {
  const seconds = median(runs.map((r) => r.seconds));
  const first = runs[0]?.firstResult === undefined ? '' : `, first result after ${median(runs.map((r) => r.firstResult ?? 0)).toFixed(2)} s`;
  process.stdout.write(`${way.padEnd(40)} ${seconds.toFixed(2)} s  ${(runs[0]!.count / seconds).toFixed(0)} attributes/s${first}\n`);
}
