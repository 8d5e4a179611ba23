import { hashPart, type DerivationView, type EvaluatedAttribute, type JobsetAttribute } from '@nixfarm/shared';
import type { DerivationGraph } from '../graph/derivation-graph.js';

/** How a failed input is named in a dependency-failed node's error ('input <drv path> <status>', graph Lua). */
const FAILED_INPUT = /^input (\/\S+\.drv)\b/;

/**
 * Each attribute's build result, read from the graph: the node of its
 * derivation in this run says how it ended; an attribute whose derivation
 * the run never registered had every output valid already (cached). An
 * eval-only run's attribute carries isCached instead.
 */
export async function attributeStatuses(
  graph: Pick<DerivationGraph, 'views' | 'derivationsOf'>,
  runId: string,
  attributes: readonly EvaluatedAttribute[],
): Promise<JobsetAttribute[]> {
  const members = new Set(await graph.derivationsOf(runId));
  const hashes = attributes.flatMap((a) => (a.drvPath !== undefined && members.has(hashPart(a.drvPath)) ? [hashPart(a.drvPath)] : []));
  const views = new Map((await graph.views(hashes)).map((v) => [hashPart(v.drvPath), v]));
  return attributes.map((a) => {
    if (a.drvPath === undefined) return { ...a, buildStatus: 'evaluation-failed' };
    // Recorded by an eval-only run: nothing was built, the store said what was there.
    if (a.isCached !== undefined) return { ...a, buildStatus: a.isCached ? 'cached' : 'not-built' };
    const view = views.get(hashPart(a.drvPath));
    return { ...a, ...(view === undefined ? { buildStatus: 'cached' as const } : resultOf(view)) };
  });
}

function resultOf(view: DerivationView): Pick<JobsetAttribute, 'buildStatus' | 'failedDrv' | 'failure' | 'dependency'> {
  switch (view.status) {
    case 'succeeded':
      return { buildStatus: 'succeeded' };
    case 'waiting':
    case 'queued':
    case 'running':
      return { buildStatus: 'pending' };
    case 'cancelled':
      return { buildStatus: 'cancelled' };
    case 'unsupported':
      return { buildStatus: 'unsupported' };
    case 'dependency-failed': {
      const input = FAILED_INPUT.exec(view.error ?? '')?.[1];
      return { buildStatus: 'dependency-failed', ...(input === undefined ? {} : { dependency: input }) };
    }
    default:
      return { buildStatus: 'failed', failedDrv: view.drvPath, failure: view.status };
  }
}
