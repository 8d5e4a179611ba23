/// <reference lib="dom" />
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import type { PromSeries } from './prometheus-server.js';
import { REPO_ROOT } from './test-farm.js';

/** One panel of the Grafana board with the series Prometheus answered for each of its queries. */
export interface BoardPanelData {
  row: string;
  title: string;
  unit?: string;
  targets: { expr: string; legendFormat: string; series: PromSeries[] }[];
}

/** What the preview drew for one panel: the points per series (charts.js's data-points) and its series labels. */
export interface DrawnPanel {
  title: string;
  points: number;
  labels: string[];
}

/**
 * A made-up origin the preview page lives on: Playwright answers its requests
 * from the repository's files, so no server runs and charts.js imports
 * uPlot beside it exactly as in the dashboard.
 */
const ORIGIN = 'http://board-preview.invalid';
const DASHBOARD_DIR = join(REPO_ROOT, 'packages', 'coordinator', 'dashboard');
const requireFromCoordinator = createRequire(join(REPO_ROOT, 'packages', 'coordinator', 'package.json'));
const FILES: Record<string, { file: string; type: string }> = {
  '/charts.js': { file: join(DASHBOARD_DIR, 'charts.js'), type: 'text/javascript' },
  '/app.css': { file: join(DASHBOARD_DIR, 'app.css'), type: 'text/css' },
  '/uPlot.esm.js': { file: requireFromCoordinator.resolve('uplot/dist/uPlot.esm.js'), type: 'text/javascript' },
  '/uPlot.min.css': { file: requireFromCoordinator.resolve('uplot/dist/uPlot.min.css'), type: 'text/css' },
};

/** Grafana's units as the charts' axis text. */
const UNITS: Record<string, string> = { s: 's', bytes: 'B', decbytes: 'B', percentunit: '', short: '' };

/** Grafana's {{label}} legend templates, filled from a series' labels. */
function legendOf(template: string, metric: Record<string, string>): string {
  const filled = template.replace(/\{\{\s*(\w+)\s*\}\}/g, (_all, name: string) => metric[name] ?? '');
  return filled.trim() || Object.values(metric).join(' ') || 'value';
}

/**
 * Draws every panel of the Grafana board with the web dashboard's own charts
 * (packages/coordinator/dashboard/charts.js) in headless Chromium, grouped by
 * the board's rows, and saves a full-page screenshot: the picture of the
 * board the README shows, since Grafana itself is not available here.
 */
export async function renderBoardPreview(browser: Browser, panels: readonly BoardPanelData[], pngPath: string): Promise<DrawnPanel[]> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  try {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.route(`${ORIGIN}/**`, async (route) => {
      const path = new URL(route.request().url()).pathname;
      if (path === '/') {
        return route.fulfill({
          contentType: 'text/html',
          body: '<!doctype html><html><head><meta charset="utf-8"><title>nixfarm board</title><link rel="stylesheet" href="/app.css"></head><body><main id="board"></main></body></html>',
        });
      }
      const file = FILES[path];
      if (file === undefined) return route.fulfill({ status: 404, body: `no ${path}` });
      return route.fulfill({ contentType: file.type, body: readFileSync(file.file) });
    });
    await page.goto(`${ORIGIN}/`);
    const charts = panels.map((p) => ({
      row: p.row,
      title: p.title,
      unit: UNITS[p.unit ?? ''] ?? p.unit ?? '',
      series: p.targets.flatMap((t) =>
        t.series.map((s) => ({
          label: legendOf(t.legendFormat, s.metric),
          points: s.values.map(([at, value]) => [at, Number.isFinite(Number(value)) ? Number(value) : null]),
        })),
      ),
    }));
    const drawn = await page.evaluate(async (list) => {
      const { timeSeriesChart } = await import(`${location.origin}/charts.js`);
      const board = document.getElementById('board')!;
      Object.assign(board.style, { padding: '12px 20px', display: 'block' });
      const made: { title: string; el: HTMLElement; labels: string[] }[] = [];
      let grid: HTMLElement | undefined;
      let row: string | undefined;
      for (const chart of list) {
        if (chart.row !== row || grid === undefined) {
          row = chart.row;
          const heading = document.createElement('h2');
          heading.textContent = row;
          grid = document.createElement('div');
          Object.assign(grid.style, { display: 'grid', gridTemplateColumns: 'repeat(3, 1fr)', gap: '12px' });
          board.append(heading, grid);
        }
        const el = document.createElement('div');
        el.className = 'chart';
        grid.append(el);
        timeSeriesChart(el, { title: chart.title, unit: chart.unit, series: chart.series, width: 440, height: 170 });
        made.push({ title: chart.title, el, labels: chart.series.map((s: { label: string }) => s.label) });
      }
      return made.map((m) => ({ title: m.title, points: Number(m.el.dataset.points ?? 0), labels: m.labels }));
    }, charts);
    await page.screenshot({ path: pngPath, fullPage: true });
    if (errors.length > 0) throw new Error(`the board preview raised: ${errors.join('; ')}`);
    return drawn;
  } finally {
    await context.close();
  }
}
