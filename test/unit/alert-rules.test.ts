import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { FarmMetrics } from '@nixfarm/coordinator';
import { alertRules, dashboardPanels, MONITORING, PROMTOOL_BIN } from '../harness/monitoring-files.js';
import { REPO_ROOT } from '../harness/test-farm.js';

/** promtool's output of one command; fails, naming the package, when promtool is not installed. */
function promtool(args: readonly string[]): { status: number | null; output: string } {
  assert.ok(existsSync(PROMTOOL_BIN), `${PROMTOOL_BIN} not found: install Debian's prometheus package (node scripts/ensure-machine.mjs --tests)`);
  const result = spawnSync(PROMTOOL_BIN, args, { encoding: 'utf8', cwd: join(REPO_ROOT, 'monitoring', 'prometheus') });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

interface RuleTestGroup {
  name?: string;
  alert_rule_test?: Array<{ alertname: string; eval_time: string; exp_alerts?: unknown[] }>;
}

describe('the Prometheus alert rules (monitoring/prometheus)', () => {
  const rules = alertRules();

  it('pass promtool check rules', () => {
    const { status, output } = promtool(['check', 'rules', MONITORING.alertRules]);
    assert.equal(status, 0, output);
    assert.match(output, new RegExp(`SUCCESS: ${rules.length} rules found`), output);
  });

  it('pass their promtool unit tests (nixfarm-alerts.test.yaml: each alert fires on its series and stays quiet on the near miss)', () => {
    const { status, output } = promtool(['test', 'rules', MONITORING.alertTests]);
    assert.equal(status, 0, output);
    assert.match(output, /SUCCESS/, output);
  });

  it('each has a severity, a summary and a description that point to its section of docs/monitoring.md, and a unit test that sees it fire and stay quiet', () => {
    const tests = (parse(readFileSync(MONITORING.alertTests, 'utf8')) as { tests: RuleTestGroup[] }).tests;
    const cases = tests.flatMap((t) => t.alert_rule_test ?? []);
    const monitoringDoc = readFileSync(join(REPO_ROOT, 'docs', 'monitoring.md'), 'utf8');
    assert.ok(rules.length >= 10, `only ${rules.length} alert rules`);
    for (const rule of rules) {
      assert.match(rule.labels?.severity ?? '', /^(page|ticket)$/, `${rule.alert}: severity`);
      assert.ok((rule.annotations?.summary ?? '').length > 20, `${rule.alert}: summary`);
      const anchor = `docs/monitoring.md#${rule.alert.toLowerCase()}`;
      assert.ok(rule.annotations?.description?.includes(anchor), `${rule.alert}: the description names ${anchor}`);
      assert.match(monitoringDoc, new RegExp(`^#+ ${rule.alert}$`, 'm'), `docs/monitoring.md has a section ${rule.alert}`);
      const mine = cases.filter((c) => c.alertname === rule.alert);
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${rule.alert}: a test case where it fires`,
      );
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${rule.alert}: a test case where it stays quiet`,
      );
    }
  });

  it('names only metrics the coordinator exports, in the rules and in every panel of the Grafana board', () => {
    const exported = new Set<string>();
    for (const m of new FarmMetrics().registry.getMetricsAsArray()) {
      exported.add(m.name);
      // a histogram's series
      for (const suffix of ['_bucket', '_sum', '_count']) exported.add(`${m.name}${suffix}`);
    }
    const exprs = [
      ...alertRules().map((r) => [r.alert, r.expr] as const),
      ...dashboardPanels().flatMap((p) => p.targets!.map((t) => [`panel "${p.title}"`, t.expr] as const)),
    ];
    const unknown = exprs.flatMap(([where, expr]) =>
      [...expr.matchAll(/\bnixfarm_[a-z0-9_]+/g)].filter((m) => !exported.has(m[0])).map((m) => `${where}: ${m[0]}`),
    );
    assert.deepEqual(unknown, []);
  });
});
