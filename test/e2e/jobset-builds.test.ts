import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { EVALUATION_LOST } from '@nixfarm/coordinator';
import type { AttributeListResponse, DerivationView, JobsetAttribute, RunView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { freshSalt, nixInstantiate, outputsOf, scriptedFixture } from '../harness/nix-fixtures.js';
import { pollFor } from '../harness/poll.js';

/**
 * A jobset built on the farm while it is evaluated: every attribute gets its
 * own result (built, evaluation error, build failure, dependency failure),
 * a dependency shared by every attribute is built once, the first build
 * starts before evaluation ends, and a cancel stops the evaluation.
 */

/** Evaluating this takes about two seconds: `later.slow` keeps evaluation going after the first builds start. */
const SLOW = 'builtins.length (builtins.attrNames (builtins.listToAttrs (builtins.genList (i: { name = toString i; value = i; }) 1000000)))';

const JOBSET = scriptedFixture(
  'jobset-builds',
  `  good-a = mk "good-a" "echo a \${shared} > $out";
  good-b = mk "good-b" "echo b \${shared} > $out";
  fails = failing;
  depends = mk "depends" "cat \${failing} > $out";
  pkgs = {
    recurseForDerivations = true;
    good-c = mk "good-c" "echo c \${shared} > $out";
    throws = throw "throw-message";
    aborts = abort "abort-message";
    notDrv = 42;
  };
  later = {
    recurseForDerivations = true;
    slow = builtins.seq (${SLOW}) (mk "slow" "echo slow \${shared} > $out");
  };
`,
  `  shared = mk "jobset-shared" "sleep 1; echo shared \${salt} > $out";
  failing = mk "fails" "echo going to fail \${shared}; exit 3";
`,
);

const GOOD = ['good-a', 'good-b', 'pkgs.good-c', 'later.slow'];

describe('building a jobset while it is evaluated', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'alpha', maxJobs: 2 },
      { name: 'beta', maxJobs: 2 },
    ],
  });

  it('gives each attribute its result, builds the shared dependency once and starts building before evaluation ends', async () => {
    const salt = freshSalt();
    const result = await farm.build([JOBSET, '--jobset', '--json', '--eval-workers', '2', '--eval-max-memory', '1024', '--argstr', 'salt', salt]);
    assert.equal(result.exitCode, 1, `some attributes fail:\n${result.stderr}\n${farm.diagnostics()}`);
    const lines = result.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as JobsetAttribute);
    const byAttr = new Map(lines.map((l) => [l.attr, l]));
    assert.equal(lines.length, byAttr.size, 'one line per attribute');
    assert.deepEqual([...byAttr.keys()].sort(), [...GOOD, 'depends', 'fails', 'pkgs.aborts', 'pkgs.notDrv', 'pkgs.throws'].sort());

    const drvs = await nixInstantiate(JOBSET, [...GOOD, 'fails', 'depends'], { salt });
    const drvOf = new Map([...GOOD, 'fails', 'depends'].map((a, i) => [a, drvs[i]!]));
    for (const attr of GOOD) {
      const got = byAttr.get(attr)!;
      const drvPath = drvOf.get(attr)!;
      assert.deepEqual(
        { ...got, system: undefined },
        {
          attr,
          attrPath: attr.split('.'),
          drvPath,
          name: attr.split('.').at(-1),
          outputs: await outputsOf(drvPath),
          system: undefined,
          buildStatus: 'succeeded',
        },
      );
    }
    assert.equal(byAttr.get('fails')!.buildStatus, 'failed');
    assert.equal(byAttr.get('fails')!.failedDrv, drvOf.get('fails'));
    assert.equal(byAttr.get('fails')!.failure, 'failed');
    assert.equal(byAttr.get('depends')!.buildStatus, 'dependency-failed');
    assert.equal(byAttr.get('depends')!.dependency, drvOf.get('fails'));
    for (const [attr, words, kind] of [
      ['pkgs.throws', 'throw-message', 'evaluation-error'],
      ['pkgs.aborts', 'abort-message', 'evaluation-error'],
      ['pkgs.notDrv', 'not a derivation', 'not-a-derivation'],
    ] as const) {
      const got = byAttr.get(attr)!;
      assert.equal(got.buildStatus, 'evaluation-failed', attr);
      assert.equal(got.errorKind, kind, attr);
      assert.match(got.error ?? '', new RegExp(words), attr);
      assert.equal(got.drvPath, undefined);
    }
    assert.match(result.stderr, /fails: build failed \(failed\)/);
    assert.match(result.stderr, /4 of 9 attributes built, 3 failed to evaluate/);

    // The API says the same, paged.
    const runId = /run (\w+)/.exec(result.stderr)?.[1];
    assert.ok(runId);
    const first = await farm.api<AttributeListResponse>(`/api/runs/${runId}/attributes?offset=0&limit=4`);
    const rest = await farm.api<AttributeListResponse>(`/api/runs/${runId}/attributes?offset=4&limit=100`);
    assert.equal(first.total, 9);
    assert.equal(first.attributes.length, 4);
    assert.deepEqual([...first.attributes, ...rest.attributes], lines);
    assert.equal(first.evaluation.state, 'done');
    assert.equal(first.evaluation.done, 9);
    assert.equal(first.evaluation.failed, 3);

    // The shared dependency: one node, built once; every output built is valid in the coordinator's store.
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    const shared = derivations.filter((d) => d.drvPath.endsWith('-jobset-shared.drv'));
    assert.equal(shared.length, 1);
    assert.equal(shared[0]!.attempts, 1);
    assert.equal(shared[0]!.status, 'succeeded');
    const outputs = GOOD.flatMap((a) => Object.values(byAttr.get(a)!.outputs ?? {}));
    const check = spawnSync('nix-store', ['--check-validity', '--print-invalid', ...outputs], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr);
    assert.equal(check.stdout.trim(), '');

    // Streaming: the first build started before evaluation ended.
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    assert.equal(run.status, 'failed');
    const firstStart = Math.min(...derivations.flatMap((d) => (d.startedAt === undefined ? [] : [d.startedAt])));
    assert.ok(run.evaluation?.endedAt !== undefined);
    assert.ok(firstStart < run.evaluation.endedAt, `first build started at ${firstStart}, evaluation ended at ${run.evaluation.endedAt}`);
  });

  it('refuses a jobset whose top value is not an attribute set, with Nix message, exit 2', async () => {
    const result = await farm.build(['--jobset', '-E', '[ 1 2 ]']);
    assert.equal(result.exitCode, 2, result.stderr);
    assert.match(result.stderr, /evaluation failed:[\s\S]*top value is not an attribute set/);
  });

  it('stops evaluating and building when a run is cancelled during evaluation', async () => {
    const slowSet = Array.from({ length: 20 }, (_, i) => `    s-${i} = mk "s-${i}" ("sleep 30; echo \${toString (${SLOW})} > $out");`).join('\n');
    const file = scriptedFixture(
      'jobset-cancel',
      `  quick = mk "quick" "sleep 30; echo quick \${salt} > $out";\n  slow = {\n    recurseForDerivations = true;\n${slowSet}\n  };\n`,
    );
    const { build, runId } = await farm.submitInBackground([file, '--jobset', '--eval-workers', '2', '--argstr', 'salt', freshSalt()]);
    await pollFor(
      async () =>
        (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`)).derivations.some((d) => d.status === 'running') || undefined,
      60_000,
      () => 'quick to start',
    );
    const cancelled = await farm.api<RunView>(`/api/runs/${runId}/cancel`, { method: 'POST' });
    assert.equal(cancelled.status, 'cancelled');
    assert.equal(cancelled.evaluation?.state, 'cancelled');
    const page = await farm.api<AttributeListResponse>(`/api/runs/${runId}/attributes`);
    assert.ok(page.total < 21, `evaluation stopped early: ${page.total} attributes`);
    const { exitCode } = await build.result;
    assert.equal(exitCode, 1);
    const after = await farm.api<AttributeListResponse>(`/api/runs/${runId}/attributes`);
    assert.equal(after.total, page.total, 'nothing more was evaluated after the cancel');
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    for (const d of derivations) assert.equal(d.status, 'cancelled', d.drvPath);
  });

  it('ends a run whose evaluation died with a coordinator restart: failed, saying so, with what was evaluated built', async () => {
    const count = 10;
    // Each derivation is slow to instantiate (its script needs SLOW), not to list: with one evaluator they come a few seconds apart, the first soon.
    const slowSets = Array.from(
      { length: count },
      (_, i) => `    g-${i} = { recurseForDerivations = true; s = mk "s-${i}" "echo s-${i} \${toString (${SLOW})} \${salt} > $out"; };`,
    ).join('\n');
    const file = scriptedFixture('jobset-restart', `  slow = {\n    recurseForDerivations = true;\n${slowSets}\n  };\n`);
    const { build, runId } = await farm.submitInBackground([file, '--jobset', '--eval-workers', '1', '--argstr', 'salt', freshSalt()]);
    await pollFor(
      async () => {
        const run = await farm.api<RunView>(`/api/runs/${runId}`);
        return run.evaluation?.state === 'evaluating' && run.evaluation.done >= 1 ? run : undefined;
      },
      60_000,
      () => 'a first attribute to be evaluated',
    );
    await farm.restartCoordinator();

    const { exitCode, stderr } = await build.result;
    assert.equal(exitCode, 1, `${stderr}\n${farm.diagnostics()}`);
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    assert.equal(run.status, 'failed');
    assert.equal(run.evaluation?.state, 'failed');
    assert.equal(run.evaluation?.error, EVALUATION_LOST);
    const { attributes, total } = await farm.api<AttributeListResponse>(`/api/runs/${runId}/attributes`);
    assert.ok(total >= 1 && total < count, `evaluated before the restart: ${total} of ${count}`);
    for (const a of attributes) assert.equal(a.buildStatus, 'succeeded', `${a.attr} was evaluated before the restart and builds`);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    for (const d of derivations) assert.equal(d.status, 'succeeded', d.drvPath);
  });
});
