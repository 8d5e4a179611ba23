import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { DerivationView, JobsetAttribute, RunView } from '@nixfarm/shared';
import { childProcesses, type ChildProcessInfo } from '../harness/child-processes.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { scaleJobsetFixture, type ScaleExpectation } from '../harness/jobset-fixture.js';
import { junitCounts, junitSchemaErrors, xpath } from '../harness/junit-report.js';
import { freshSalt } from '../harness/nix-fixtures.js';
import { sleep } from '../harness/poll.js';
import { onProcessExit, removeTreeSync } from '../harness/process-cleanup.js';

/**
 * The issue's jobset at scale on the usual two-worker farm: 2,000
 * attributes over a shared layered DAG, with every kind of evaluation
 * failure and three build failures. Every attribute gets its exact result,
 * the JSON lines carry nix-eval-jobs' field names, and an evaluator
 * SIGKILLed mid-evaluation changes nothing; the JUnit report validates
 * against the JUnit schema with one case per attribute.
 */

/** nix-eval-jobs' fields, then nixfarm's own: a line has no other. */
const NIX_EVAL_JOBS_FIELDS = ['attr', 'attrPath', 'drvPath', 'outputs', 'system', 'name', 'error'];
const NIXFARM_FIELDS = ['errorKind', 'buildStatus', 'failedDrv', 'failure', 'dependency'];

/** What plain Nix says each attribute's drvPath and outputs are (read-only evaluation: nothing of nixfarm's in the way). */
function nixDerivations(file: string, salt: string, attrs: readonly string[]): Map<string, { drvPath: string; out: string }> {
  const expr = `let top = import ${file} { salt = ${JSON.stringify(salt)}; }; at = p: builtins.foldl' (v: n: v.\${n}) top p; in
    map (p: let v = at p; in { inherit (v) drvPath; out = v.outPath; }) [ ${attrs
      .map(
        (a) =>
          `[ ${a
            .split('.')
            .map((n) => JSON.stringify(n))
            .join(' ')} ]`,
      )
      .join(' ')} ]`;
  const json = execFileSync('nix-instantiate', ['--eval', '--strict', '--json', '--expr', expr], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const values = JSON.parse(json) as Array<{ drvPath: string; out: string }>;
  return new Map(attrs.map((a, i) => [a, values[i]!]));
}

describe('a 2,000-attribute jobset on the farm', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'alpha', maxJobs: 2 },
      { name: 'beta', maxJobs: 2 },
    ],
  });
  const fixture = scaleJobsetFixture({ attributes: 2000, layers: 4, width: 20, withFailures: true });

  it('gives every attribute its exact result, in nix-eval-jobs JSON lines, although an evaluator is SIGKILLed mid-evaluation', async () => {
    const salt = freshSalt();
    const dir = mkdtempSync(join(tmpdir(), 'nixfarm-scale-junit-'));
    onProcessExit(() => removeTreeSync(dir));
    const report = join(dir, 'report.xml');
    const args = [
      fixture.file,
      '--jobset',
      '--json',
      '--junit',
      report,
      '--eval-workers',
      '2',
      '--eval-max-memory',
      String(fixture.evalMaxMemoryMiB),
      '--argstr',
      'salt',
      salt,
    ];
    const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, ...args], { timeoutMs: 300_000 });

    // Kill the first instantiation batch the coordinator runs: the pool runs it again in a new process.
    let killed: ChildProcessInfo | undefined;
    for (const deadline = Date.now() + 60_000; killed === undefined && Date.now() < deadline; await sleep(5)) {
      killed = childProcesses(farm.coordinator.pid!, 'nix-instantiate').find((e) => e.cmdline.includes('nixfarm-batch'));
      if (killed !== undefined) process.kill(killed.pid, 'SIGKILL');
    }
    assert.ok(killed !== undefined, 'an evaluator of the coordinator was found and killed');

    const result = await build.result;
    assert.equal(result.exitCode, 1, `some attributes fail:\n${result.stderr.slice(-3000)}\n${farm.diagnostics()}`);
    assert.match(farm.tail('coordinator', 1_000_000), /evaluator killed from outside/, 'the coordinator saw the kill and ran the batch again');

    const lines = result.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as JobsetAttribute);
    const byAttr = new Map(lines.map((l) => [l.attr, l]));
    assert.equal(lines.length, 2000, `one line per attribute; the CLI said:\n${result.stderr.slice(-3000)}\n${farm.diagnostics()}`);
    assert.deepEqual([...byAttr.keys()].sort(), [...fixture.expected.keys()].sort());

    for (const line of lines) {
      for (const key of Object.keys(line)) assert.ok([...NIX_EVAL_JOBS_FIELDS, ...NIXFARM_FIELDS].includes(key), `${line.attr}: unknown field ${key}`);
      assert.deepEqual(line.attrPath, line.attr.split('.'));
    }

    const withDrv = [...fixture.expected].filter(([, e]) => e.kind !== 'evaluation-failed').map(([attr]) => attr);
    const nix = nixDerivations(fixture.file, salt, withDrv);
    const system = execFileSync('nix-instantiate', ['--eval', '--json', '--expr', 'builtins.currentSystem'], { encoding: 'utf8' }).trim().replaceAll('"', '');
    const counts: Record<string, number> = {};
    for (const [attr, want] of fixture.expected) {
      const got = byAttr.get(attr)!;
      counts[want.kind] = (counts[want.kind] ?? 0) + 1;
      assertAttribute(attr, got, want, nix, system);
    }
    assert.deepEqual(counts, { 'evaluation-failed': 8, 'dependency-failed': 11, failed: 2, succeeded: 1979 });
    assert.match(result.stderr, /1979 of 2000 attributes built, 8 failed to evaluate/);

    // The run: the shared DAG built once, three builds failed, the first build started before evaluation ended.
    const runId = /run (\w+)/.exec(result.stderr)?.[1];
    assert.ok(runId);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    const byStatus = (status: string): DerivationView[] => derivations.filter((d) => d.status === status);
    assert.equal(byStatus('succeeded').length, fixture.builds - 3);
    assert.deepEqual(
      byStatus('failed')
        .map((d) => d.name)
        .sort(),
      ['broken-base', 'fails-0', 'fails-1'],
    );
    assert.equal(byStatus('dependency-failed').length, 11);
    for (const d of derivations)
      assert.ok(
        d.attempts <= 1,
        `${d.name} was built at most once: ${d.attempts} (${JSON.stringify(d)})\n${farm.linesMentioning(d.drvPath.slice('/nix/store/'.length, '/nix/store/'.length + 32))}`,
      );
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    const firstStart = Math.min(...derivations.flatMap((d) => (d.startedAt === undefined ? [] : [d.startedAt])));
    assert.ok(run.evaluation?.endedAt !== undefined && firstStart < run.evaluation.endedAt, 'the first build started while evaluation went on');

    // The JUnit report: schema-valid, one test case per attribute, the counts as above (dependency failures are failures too).
    assert.equal(junitSchemaErrors(report), undefined);
    assert.deepEqual(junitCounts(report), { tests: 2000, failures: 2 + 11, errors: 8, skipped: 0 });
    assert.equal(xpath(report, 'count(//testcase[not(*)])'), '1979', 'every attribute that built is a passing case');
  });
});

function assertAttribute(attr: string, got: JobsetAttribute, want: ScaleExpectation, nix: Map<string, { drvPath: string; out: string }>, system: string): void {
  if (want.kind === 'evaluation-failed') {
    assert.equal(got.buildStatus, 'evaluation-failed', attr);
    assert.equal(got.errorKind, want.errorKind, attr);
    assert.ok(got.error?.includes(want.words), `${attr}'s error has "${want.words}": ${got.error}`);
    assert.equal(got.drvPath, undefined, attr);
    return;
  }
  const { drvPath, out } = nix.get(attr)!;
  assert.deepEqual(
    { attr: got.attr, drvPath: got.drvPath, outputs: got.outputs, system: got.system, error: got.error },
    { attr, drvPath, outputs: { out }, system, error: undefined },
    attr,
  );
  assert.ok(got.name !== undefined && drvPath.endsWith(`-${got.name}.drv`), `${attr}'s name ${got.name} is its derivation's`);
  assert.equal(got.buildStatus, want.kind, attr);
  if (want.kind === 'failed') assert.equal(got.failedDrv, drvPath, attr);
  if (want.kind === 'dependency-failed') {
    const dependency = nix.get(`failing.${want.dependency}`)?.drvPath;
    assert.ok(
      got.dependency !== undefined && (dependency === undefined ? got.dependency.endsWith(`-${want.dependency}.drv`) : got.dependency === dependency),
      attr,
    );
  }
}
