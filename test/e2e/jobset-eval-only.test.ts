import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { AttributeListResponse, DerivationView, RunView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { freshSalt, nixInstantiate, outputsOf, scriptedFixture } from '../harness/nix-fixtures.js';

/**
 * `--eval-only`: a jobset is evaluated and each attribute printed with
 * nix-eval-jobs' `--check-cache-status` fields (isCached: every output valid
 * in the coordinator's store), and nothing is queued or built; the run ends
 * when evaluation ends. Exit 1 when an attribute failed to evaluate.
 */

const JOBSET = scriptedFixture(
  'jobset-eval-only',
  `  built = mk "eo-built" "echo built \${salt} \${shared} > $out";
  fresh = mk "eo-fresh" "echo fresh \${salt} \${shared} > $out";
  pkgs = {
    recurseForDerivations = true;
    more = mk "eo-more" "echo more \${salt} > $out";
    throws = throw "eval-only-throw";
  };
`,
  `  shared = mk "eo-shared" "echo shared \${salt} > $out";
`,
);

/** The keys nix-eval-jobs --check-cache-status prints for an attribute that evaluated, and for one that did not. */
const EVAL_JOBS_KEYS = ['attr', 'attrPath', 'drvPath', 'isCached', 'name', 'outputs', 'system'];
const EVAL_JOBS_ERROR_KEYS = ['attr', 'attrPath', 'error'];

describe('evaluating a jobset without building it', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'alpha', maxJobs: 2 },
      { name: 'beta', maxJobs: 2 },
    ],
  });

  it('prints nix-eval-jobs lines with isCached, queues nothing and builds nothing', async () => {
    const salt = freshSalt();
    const prior = await farm.build([JOBSET, '-A', 'built', '--argstr', 'salt', salt]);
    assert.equal(prior.exitCode, 0, `${prior.stderr}\n${farm.diagnostics()}`);

    const result = await farm.build([JOBSET, '--jobset', '--eval-only', '--json', '--argstr', 'salt', salt]);
    assert.equal(result.exitCode, 1, `pkgs.throws fails to evaluate:\n${result.stderr}`);
    const lines = result.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const byAttr = new Map(lines.map((l) => [l.attr as string, l]));
    assert.deepEqual([...byAttr.keys()].sort(), ['built', 'fresh', 'pkgs.more', 'pkgs.throws']);
    const attrs = ['built', 'fresh', 'pkgs.more'];
    const drvs = await nixInstantiate(JOBSET, attrs, { salt });
    for (const [i, attr] of attrs.entries()) {
      const line = byAttr.get(attr)!;
      assert.deepEqual(Object.keys(line).sort(), EVAL_JOBS_KEYS, `${attr}: exactly nix-eval-jobs' fields`);
      assert.equal(line.drvPath, drvs[i]);
      assert.deepEqual(line.outputs, await outputsOf(drvs[i]!));
      assert.deepEqual(line.attrPath, attr.split('.'));
      assert.equal(line.isCached, attr === 'built', `${attr}: isCached`);
    }
    const throws = byAttr.get('pkgs.throws')!;
    assert.deepEqual(Object.keys(throws).sort(), EVAL_JOBS_ERROR_KEYS);
    assert.match(String(throws.error), /eval-only-throw/);
    assert.match(result.stderr, /4 attributes evaluated \(1 cached, nothing built\), 1 failed to evaluate/);

    // The run evaluated only: ended with evaluation, no derivation registered, nothing new in any store.
    const runId = /run (\w+)/.exec(result.stderr)?.[1];
    assert.ok(runId);
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    assert.equal(run.evaluation?.state, 'done');
    assert.equal(run.status, 'failed');
    assert.equal(run.total, 0);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    assert.deepEqual(derivations, []);
    const page = await farm.api<AttributeListResponse>(`/api/runs/${runId}/attributes`);
    const statuses = Object.fromEntries(page.attributes.map((a) => [a.attr, [a.buildStatus, a.isCached]]));
    assert.deepEqual(statuses, {
      built: ['cached', true],
      fresh: ['not-built', false],
      'pkgs.more': ['not-built', false],
      'pkgs.throws': ['evaluation-failed', undefined],
    });
    const unbuilt = [1, 2].flatMap((i) => Object.values(byAttr.get(attrs[i]!)!.outputs as Record<string, string>));
    const check = spawnSync('nix-store', ['--check-validity', '--print-invalid', ...unbuilt], { encoding: 'utf8' });
    assert.deepEqual(check.stdout.trim().split('\n').sort(), [...unbuilt].sort(), 'not built into the coordinator store');
    for (const w of farm.workers.values()) for (const out of unbuilt) assert.equal(existsSync(w.machine.hostPathOf(out)), false, `${out} on ${w.spec.name}`);
  });

  it('exits 0 when every attribute evaluates, and prints the .drv paths without --json', async () => {
    const salt = freshSalt();
    const result = await farm.build(['--jobset', '--eval-only', '-E', `{ inherit (import ${JOBSET} { salt = "${salt}"; }) built fresh; }`]);
    assert.equal(result.exitCode, 0, result.stderr);
    assert.deepEqual(result.stdout.trim().split('\n').sort(), (await nixInstantiate(JOBSET, ['built', 'fresh'], { salt })).sort());
    assert.match(result.stderr, /built: not built/);
  });
});
