/**
 * How much each labelled counter grew between two reads, as Prometheus's
 * increase() sees it: a counter lower than before was reset (its process
 * restarted), so all of its value now is new. Counters that did not grow are
 * left out.
 */
export function counterDeltas(previous: ReadonlyMap<string, number>, current: ReadonlyMap<string, number>): Record<string, number> {
  const deltas: Record<string, number> = {};
  for (const [label, value] of current) {
    const before = previous.get(label) ?? 0;
    const grew = value >= before ? value - before : value;
    if (grew > 0) deltas[label] = grew;
  }
  return deltas;
}
