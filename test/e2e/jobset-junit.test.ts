import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { AttributeListResponse, DerivationView, RunView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { junitCounts, junitSchemaErrors, xpath } from '../harness/junit-report.js';
import { freshSalt, nixInstantiate, scriptedFixture } from '../harness/nix-fixtures.js';
import { pollFor } from '../harness/poll.js';
import { onProcessExit, removeTreeSync } from '../harness/process-cleanup.js';

/**
 * `--junit FILE`: a JUnit XML report of a jobset run, one test case per
 * attribute, that validates against Jenkins' JUnit schema (vendored in
 * test/fixtures) with xmllint: a failed build is a failure with its log's
 * tail, a dependency failure names the dependency, an evaluation error is an
 * error with Nix's message, a cancelled build is skipped with the reason;
 * control characters and markup in logs and messages are escaped.
 */

// The failing builder prints a control character, colours and markup that must not break the XML.
const JOBSET = scriptedFixture(
  'jobset-junit',
  `  ok = mk "ju-ok" "echo ok \${salt} > $out";
  fails = failing;
  depends = mk "ju-depends" "cat \${failing} > $out";
  throws = throw "<bad> & \\"quoted\\" message";
  pkgs = {
    recurseForDerivations = true;
    inner = mk "ju-inner" "echo inner \${salt} > $out";
  };
  away = derivation { name = "ju-away"; system = "riscv64-linux"; builder = "\${bb}/bin/sh"; args = [ "-c" "echo \${salt} > $out" ]; };
`,
  // Nix reads \\ as one backslash: printf gets \001 (a control character) and \033 (colours).
  `  failing = mk "ju-fails" "echo first line \${salt}; printf 'ctl:\\\\001 \\\\033[31mred\\\\033[0m <tag>&amp; ]]>\\\\n'; exit 3";
`,
);

describe('a JUnit report of a jobset run', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'alpha', maxJobs: 2 },
      { name: 'beta', maxJobs: 2 },
    ],
  });

  it('validates against the JUnit schema, with one case per attribute and counts that match', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nixfarm-junit-'));
    onProcessExit(() => removeTreeSync(dir));
    const report = join(dir, 'report.xml');
    const salt = freshSalt();
    const { build, runId } = await farm.submitInBackground([JOBSET, '--jobset', '--junit', report, '--argstr', 'salt', salt]);
    // Nothing here builds riscv64-linux: once the rest has ended, cancel the run so that its build ends cancelled.
    await pollFor(
      async () => {
        const page = await farm.api<AttributeListResponse>(`/api/runs/${runId}/attributes`);
        const rest = page.attributes.filter((a) => a.attr !== 'away');
        return page.evaluation.state === 'done' && rest.length === 5 && rest.every((a) => a.buildStatus !== 'pending') ? page : undefined;
      },
      60_000,
      () => 'every attribute but away to end',
    );
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    assert.equal(derivations.find((d) => d.name === 'ju-away')?.status, 'unsupported');
    await farm.api<RunView>(`/api/runs/${runId}/cancel`, { method: 'POST' });
    const { exitCode, stderr } = await build.result;
    assert.equal(exitCode, 1, stderr);
    assert.match(stderr, new RegExp(`JUnit report in ${report}`));

    assert.equal(junitSchemaErrors(report), undefined);
    assert.deepEqual(
      junitCounts(report),
      { tests: 6, failures: 2, errors: 1, skipped: 1 },
      'ok, pkgs.inner pass; fails, depends fail; throws errs; away skipped',
    );
    assert.equal(xpath(report, 'count(//testcase)'), '6');
    assert.equal(xpath(report, 'count(//testcase[not(*)])'), '2');
    assert.equal(xpath(report, 'string(//testcase[@name="inner"]/@classname)'), 'pkgs');
    assert.equal(xpath(report, 'string(//testcase[@name="ok"]/@classname)'), 'jobset');

    const [failingDrv] = await nixInstantiate(JOBSET, ['fails'], { salt });
    const failure = xpath(report, 'string(//testcase[@name="fails"]/failure)');
    assert.match(xpath(report, 'string(//testcase[@name="fails"]/failure/@message)'), new RegExp(`build of ${failingDrv} failed`));
    assert.match(failure, new RegExp(`first line ${salt}`), 'the log tail');
    assert.match(failure, /ctl:\uFFFD red <tag>&amp; \]\]>/, 'control character replaced, colours stripped, markup kept as text');
    const dependency = xpath(report, 'string(//testcase[@name="depends"]/failure/@message)');
    assert.match(dependency, new RegExp(`dependency ${failingDrv} of .*-ju-depends.drv failed`));
    assert.equal(xpath(report, 'string(//testcase[@name="depends"]/failure/@type)'), 'dependency-failed');
    assert.match(xpath(report, 'string(//testcase[@name="throws"]/error/@message)'), /<bad> & "quoted" message/);
    assert.match(xpath(report, 'string(//testcase[@name="away"]/skipped)'), /^cancelled: /);
    const raw = readFileSync(report, 'utf8');
    assert.doesNotMatch(raw, /[\u0000-\u0008\u000B\u000C\u000E-\u001F]/);
  });
});
