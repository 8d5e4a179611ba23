import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { WorkerListing } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { type BoardPanelData, renderBoardPreview } from '../harness/board-preview.js';
import { artifactDir, launchChromium } from '../harness/headless-browser.js';
import { alertRules, dashboardPanels, MONITORING } from '../harness/monitoring-files.js';
import { chain, failingBranch, freshSalt } from '../harness/nix-fixtures.js';
import { pollFor, sleep } from '../harness/poll.js';
import { PrometheusServer, type PromSeries } from '../harness/prometheus-server.js';
import type { RunningCommand } from '../harness/test-farm.js';

/** A system no worker of the farm serves: its queue waits with no live worker. */
const UNSERVED = 'riscv64-linux';

/** A panel's query as Grafana would send it for one system: its variables substituted. */
function substitute(expr: string, system: string): string {
  return expr.replaceAll('${system}', system).replaceAll('$system', system).replaceAll('$__rate_interval', '1m').replaceAll('$__interval', '15s');
}

/** Metric names a PromQL expression selects (ours, and Prometheus's `up`). */
function metricNames(expr: string): string[] {
  return [...new Set([...expr.matchAll(/\b(nixfarm_[a-z0-9_]+|up(?=\{))/g)].map((m) => m[1]!))];
}

const finite = (s: PromSeries) => s.values.some(([, v]) => Number.isFinite(Number(v)));

describe("the alert rules and the Grafana board's queries, on a real Prometheus scraping a real run", () => {
  const cache = mkdtempSync(join(tmpdir(), 'nixfarm-board-cache-'));
  // two workers so that sampled checks have a worker other than the builder; uploads so their series exist
  const farm = farmForSuite({
    workers: [
      { name: 'w1', maxJobs: 2 },
      { name: 'w2', maxJobs: 2 },
    ],
    coordinatorArgs: ['--push-to', `file://${cache}`, '--check-fraction', '1'],
  });
  let prometheus: PrometheusServer;
  let system: string;
  let startSeconds: number;
  let unserved: { build: RunningCommand; runId: string };
  /** every panel with the series Prometheus answered, kept for the picture of the board */
  const kept: BoardPanelData[] = [];

  before(async () => {
    const { workers } = await farm.api<{ workers: WorkerListing[] }>('/api/workers');
    system = workers[0]!.systems[0]!;
    prometheus = await PrometheusServer.start({
      target: new URL(farm.address.httpUrl).host,
      tokenFile: join(farm.coordinatorStateDir, 'api-token-read'),
      ruleFiles: [MONITORING.alertRules],
    });
    startSeconds = Math.floor(Date.now() / 1000) - 1;
  });
  after(async () => {
    await prometheus?.stop();
  });

  it('scrapes a run with a failing derivation, a succeeding chain (uploaded, checked) and work for a system no worker serves', async () => {
    unserved = await farm.submitInBackground([chain(1, { system: UNSERVED }).file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    const [failed, succeeded] = await Promise.all([
      farm.build([failingBranch().file, '-A', 'all', '--argstr', 'salt', freshSalt()], { timeoutMs: 60_000 }),
      farm.build([chain(3, { sleepSeconds: 0.5 }).file, '-A', 'all', '--argstr', 'salt', freshSalt()], { timeoutMs: 60_000 }),
    ]);
    assert.notEqual(failed.exitCode, 0, failed.stderr);
    assert.equal(succeeded.exitCode, 0, `${succeeded.stderr}\n${farm.diagnostics()}`);
    // the background work ends: every check of the chain and its upload, as Prometheus sees them
    for (const name of ['nixfarm_checks_total', 'nixfarm_uploads_total']) {
      await pollFor(
        async () => (await prometheus.series(name)).length > 0,
        30_000,
        () => `Prometheus to store ${name}\n${prometheus.logText()}`,
        250,
      );
    }
    await pollFor(
      async () => (await prometheus.query('sum(nixfarm_checks_pending) == 0 and sum(nixfarm_upload_queue_depth) == 0')).length > 0,
      30_000,
      () => 'checks and uploads to end',
      250,
    );
    await sleep(3000); // a few scrapes after the end, so that rates over the run have their last points
  });

  it("returns data for every query of every panel of the Grafana board, and keeps each panel's series in test-artifacts", async () => {
    const endSeconds = Math.ceil(Date.now() / 1000);
    const panels = dashboardPanels();
    assert.ok(panels.length >= 20, `only ${panels.length} panels`);
    for (const panel of panels) {
      const targets = [];
      for (const target of panel.targets!) {
        const expr = substitute(target.expr, system);
        const series = await prometheus.queryRange(expr, startSeconds, endSeconds, 1);
        assert.ok(series.some(finite), `panel "${panel.title}" (${panel.row}): no data for ${expr}: ${JSON.stringify(series).slice(0, 500)}`);
        targets.push({ expr, legendFormat: target.legendFormat ?? '', series });
      }
      kept.push({
        row: panel.row ?? '',
        title: panel.title,
        unit: (panel as { fieldConfig?: { defaults?: { unit?: string } } }).fieldConfig?.defaults?.unit,
        targets,
      });
    }
    writeFileSync(join(artifactDir('prometheus-board'), 'panels.json'), `${JSON.stringify({ system, startSeconds, endSeconds, panels: kept }, null, 1)}\n`);
  });

  it("draws every panel's series with the web dashboard's own charts: the picture of the board in the README (docs/monitoring-board.png)", async () => {
    const browser = await launchChromium();
    try {
      const drawn = await renderBoardPreview(browser, kept, join(artifactDir('prometheus-board'), 'board.png'));
      assert.equal(drawn.length, kept.length);
      for (const [i, panel] of kept.entries()) {
        // the chart's points are the times of all its series together, as Prometheus answered them
        const times = new Set(panel.targets.flatMap((t) => t.series.flatMap((s) => s.values.map(([at]) => at))));
        assert.equal(drawn[i]!.points, times.size, `panel "${panel.title}" drew ${drawn[i]!.points} points of ${times.size}`);
        assert.equal(
          drawn[i]!.labels.length,
          panel.targets.reduce((n, t) => n + t.series.length, 0),
          `panel "${panel.title}": one line per series`,
        );
      }
    } finally {
      await browser.close();
    }
  });

  it('evaluates every alert rule (health ok, each metric it names has series), and the ones the run makes true go pending or fire', async () => {
    const rules = alertRules();
    for (const rule of rules) {
      await prometheus.query(rule.expr); // throws on an error
      for (const name of metricNames(rule.expr)) {
        assert.ok((await prometheus.series(name)).length > 0, `${rule.alert}: no series of ${name}`);
      }
    }
    const groups = await pollFor(
      async () => {
        const data = await prometheus.api<{ groups: Array<{ rules: Array<{ name: string; type: string; health: string; lastError?: string }> }> }>('rules');
        const all = data.groups.flatMap((g) => g.rules);
        return all.every((r) => r.health !== 'unknown') && all;
      },
      10_000,
      () => 'every rule to be evaluated once',
    );
    assert.deepEqual(
      groups.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.health} ${r.lastError ?? ''}`),
      [],
    );
    assert.deepEqual(groups.map((r) => r.name).sort(), rules.map((r) => r.alert).sort(), 'Prometheus loaded every alert of the file');

    const active = await pollFor(
      async () => {
        const { alerts } = await prometheus.api<{ alerts: Array<{ labels: Record<string, string>; state: string }> }>('alerts');
        const mine = alerts.filter((a) => a.labels.system === UNSERVED);
        return mine.some((a) => a.labels.alertname === 'NixfarmQueueNoLiveWorker') && mine.some((a) => a.labels.alertname === 'NixfarmWorkersNeeded') && alerts;
      },
      10_000,
      () => `the unserved queue's alerts to go pending`,
    );
    const noWorker = active.find((a) => a.labels.alertname === 'NixfarmQueueNoLiveWorker')!;
    assert.deepEqual(
      { queue: noWorker.labels.queue, severity: noWorker.labels.severity, job: noWorker.labels.job },
      { queue: `build@${UNSERVED}`, severity: 'page', job: 'nixfarm' },
    );
    assert.match(noWorker.state, /^(pending|firing)$/);
    // the served system's queue has live workers: no alert names it
    assert.deepEqual(
      active.filter((a) => a.labels.system === system).map((a) => a.labels.alertname),
      [],
    );
    // nothing about the coordinator or Redis: it was scraped all along and Redis has no maxmemory
    assert.deepEqual(
      active.filter((a) => /Coordinator|Redis/.test(a.labels.alertname ?? '')).map((a) => a.labels.alertname),
      [],
    );

    const cancelled = await farm.cli(['cancel', unserved.runId]);
    assert.equal(cancelled.exitCode, 0, cancelled.stderr);
    await unserved.build.result;
  });
});
