import type { Registry } from 'prom-client';

/** FarmMetrics's counter of builds ended by a worker report, by status and system. */
const FINISHED_COUNTER = 'nixfarm_derivations_finished_total';

/**
 * The builds this process has seen end, per status over all systems, read
 * from the metrics' own counter: the history counts exactly what /metrics
 * exports, from the one place reports are counted.
 */
export async function finishedTotals(registry: Registry): Promise<Map<string, number>> {
  const totals = new Map<string, number>();
  const metric = registry.getSingleMetric(FINISHED_COUNTER);
  if (metric === undefined) return totals;
  for (const { labels, value } of (await metric.get()).values) {
    const status = String(labels.status ?? 'unknown');
    totals.set(status, (totals.get(status) ?? 0) + value);
  }
  return totals;
}
