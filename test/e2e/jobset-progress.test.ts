import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttributeListResponse, EvaluationProgress, FarmStatus, RunView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { freshSalt, scriptedFixture } from '../harness/nix-fixtures.js';
import { pollFor } from '../harness/poll.js';

/**
 * A jobset's evaluation progress while it runs and at its end, as
 * `nixfarm runs RUN` (JSON and text) and `nixfarm status` show it: attributes
 * done, failed to evaluate and left, and the builds of the evaluated
 * attributes by outcome.
 */

/** About two seconds of evaluation (as in jobset-builds.test.ts). */
const SLOW = 'builtins.length (builtins.attrNames (builtins.listToAttrs (builtins.genList (i: { name = toString i; value = i; }) 1000000)))';
const SLOW_SETS = 6;

// One set per slow attribute: an evaluator's batch never spans sets, so these come one by one, seconds apart.
const JOBSET = scriptedFixture(
  'jobset-progress',
  `  throws = throw "throw-message";
  notDrv = 42;
  fails = failing;
  depends = mk "depends" "cat \${failing} > $out";
  cached = mk "cached-one" "echo cached \${salt} > $out";
  slow = {
    recurseForDerivations = true;
${Array.from({ length: SLOW_SETS }, (_, i) => `    g-${i} = { recurseForDerivations = true; s = builtins.seq (${SLOW}) (mk "s-${i}" "echo s-${i} \${salt} > $out"); };`).join('\n')}
  };
`,
  `  failing = mk "fails" "echo going to fail \${salt}; exit 3";
`,
);

const ATTRIBUTES = 5 + SLOW_SETS;

describe('jobset evaluation progress', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'alpha', maxJobs: 2 },
      { name: 'beta', maxJobs: 2 },
    ],
  });

  const runJson = async (runId: string): Promise<RunView> => {
    const shown = await farm.cli(['runs', runId, '--json']);
    assert.equal(shown.exitCode, 0, shown.stderr);
    return JSON.parse(shown.stdout) as RunView;
  };

  it('shows done, failed and left while evaluating, the run in `nixfarm status`, and exact counts at the end', async () => {
    const salt = freshSalt();
    // Built once before: in the jobset its outputs are valid, so that attribute is cached.
    const before = await farm.build([JOBSET, '-A', 'cached', '--argstr', 'salt', salt]);
    assert.equal(before.exitCode, 0, before.stderr);

    const { build, runId } = await farm.submitInBackground([JOBSET, '--jobset', '--eval-workers', '2', '--argstr', 'salt', salt]);

    // Mid-way: some attributes done, more known to be left.
    const mid = await pollFor(
      async () => {
        const e = (await runJson(runId)).evaluation;
        return e?.state === 'evaluating' && e.done >= 1 && e.done < e.discovered ? e : undefined;
      },
      90_000,
      () => `a mid-way view of the evaluation:\n${build.stderrSoFar()}`,
    );
    assert.equal(mid.left, mid.discovered - mid.done);
    assert.ok(mid.discovered <= ATTRIBUTES);
    assert.ok(mid.elapsedMs > 0);
    // The attributes list only grows, and each record bumps the counters with it: its first `done` entries are what that view counted.
    const { attributes } = await farm.api<AttributeListResponse>(`/api/runs/${runId}/attributes?offset=0&limit=${mid.done}`);
    assert.equal(attributes.length, mid.done);
    assert.equal(mid.failed, attributes.filter((a) => a.buildStatus === 'evaluation-failed').length, 'failed = attributes that failed to evaluate');
    assert.equal(sum(mid.builds), mid.done - mid.failed, 'every evaluated derivation counted under one build outcome');

    // `nixfarm status` lists the run while it evaluates, in JSON and in text.
    const statusJson = await farm.cli(['status', '--json']);
    assert.equal(statusJson.exitCode, 0, statusJson.stderr);
    const evaluating = (JSON.parse(statusJson.stdout) as FarmStatus).evaluating.find((r) => r.runId === runId);
    assert.ok(evaluating, `status lists ${runId} as evaluating:\n${statusJson.stdout}`);
    assert.equal(evaluating.evaluation.state, 'evaluating');
    assert.ok(evaluating.evaluation.done >= mid.done);
    const statusText = await farm.cli(['status']);
    assert.match(statusText.stdout, /Runs: \d+ active, 1 evaluating a jobset/);
    assert.match(statusText.stdout, new RegExp(`${runId}  evaluating for \\S+ at [\\d.]+ attributes/s: \\d+ done, \\d+ failed to evaluate`));

    const result = await build.result;
    assert.equal(result.exitCode, 1, `attributes fail:\n${result.stderr}\n${farm.diagnostics()}`);

    // The end: exact counts.
    const end = (await runJson(runId)).evaluation!;
    assert.deepEqual({ ...end, startedAt: 0, endedAt: 0, elapsedMs: 0, attributesPerSecond: 0 } satisfies EvaluationProgress, {
      state: 'done',
      done: ATTRIBUTES,
      failed: 2,
      discovered: ATTRIBUTES,
      discovering: false,
      left: 0,
      startedAt: 0,
      endedAt: 0,
      elapsedMs: 0,
      attributesPerSecond: 0,
      builds: { succeeded: SLOW_SETS, cached: 1, failed: 1, 'dependency-failed': 1, unsupported: 0, cancelled: 0, pending: 0 },
    });
    assert.equal(end.elapsedMs, end.endedAt! - end.startedAt);
    assert.ok(end.attributesPerSecond > 0);
    const text = await farm.cli(['runs', runId]);
    assert.match(text.stdout, new RegExp(`evaluation: done: ${ATTRIBUTES} done, 2 failed to evaluate · \\S+ · [\\d.]+ attributes/s`));
    assert.match(text.stdout, new RegExp(`attribute builds: ${SLOW_SETS} succeeded, 1 cached, 1 failed, 1 dependency-failed\\n`));
    const after = await farm.cli(['status', '--json']);
    assert.equal((JSON.parse(after.stdout) as FarmStatus).evaluating.length, 0, 'nothing evaluates any more');
  });
});

function sum(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}
