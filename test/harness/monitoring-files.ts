import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT } from './test-farm.js';

/** The operator's kit the repository ships (docs/monitoring.md). */
export const MONITORING = {
  alertRules: join(REPO_ROOT, 'monitoring', 'prometheus', 'nixfarm-alerts.yaml'),
  alertTests: join(REPO_ROOT, 'monitoring', 'prometheus', 'nixfarm-alerts.test.yaml'),
  dashboard: join(REPO_ROOT, 'monitoring', 'grafana', 'nixfarm-dashboard.json'),
};

/** Debian's `prometheus` package (scripts/ensure-machine.mjs --tests installs it); overridable for other layouts. */
export const PROMETHEUS_BIN = process.env.NIXFARM_PROMETHEUS ?? '/usr/bin/prometheus';
export const PROMTOOL_BIN = process.env.NIXFARM_PROMTOOL ?? '/usr/bin/promtool';

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** The alert rules of the rule file, every group's in order. */
export function alertRules(): AlertRule[] {
  const file = parse(readFileSync(MONITORING.alertRules, 'utf8')) as { groups: Array<{ name: string; rules: Array<AlertRule | { record: string }> }> };
  return file.groups.flatMap((g) => g.rules.filter((r): r is AlertRule => 'alert' in r));
}

export interface DashboardPanel {
  title: string;
  /** the row it is under (set by dashboardPanels) */
  row?: string;
  type: string;
  targets?: Array<{ expr: string; legendFormat?: string; refId?: string }>;
  panels?: DashboardPanel[];
}

/** The Grafana board's panels that query, each with the row it is under (a collapsed row's panels included). */
export function dashboardPanels(): DashboardPanel[] {
  const board = JSON.parse(readFileSync(MONITORING.dashboard, 'utf8')) as { panels: DashboardPanel[] };
  const out: DashboardPanel[] = [];
  let row: string | undefined;
  for (const p of board.panels) {
    if (p.type === 'row') row = p.title;
    for (const panel of p.type === 'row' ? (p.panels ?? []) : [p])
      if ((panel.targets ?? []).length > 0) out.push({ ...panel, ...(row === undefined ? {} : { row }) });
  }
  return out;
}
