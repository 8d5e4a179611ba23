import {
  hashPart,
  isBuildStatus,
  type AttributeBuildOutcome,
  type BuildStatus,
  type DerivationView,
  type EvaluatedAttribute,
  type JobsetAttribute,
} from '@nixfarm/shared';
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

/**
 * What a derivation's status means for the attributes built by it; exhaustive,
 * so a new status is decided here. RunAttributes counts with the same table.
 */
export function attributeOutcomeOf(status: BuildStatus): Exclude<AttributeBuildOutcome, 'cached'> {
  switch (status) {
    case 'succeeded':
      return 'succeeded';
    case 'waiting':
    case 'queued':
    case 'running':
      return 'pending';
    case 'cancelled':
      return 'cancelled';
    case 'unsupported':
      return 'unsupported';
    case 'dependency-failed':
      return 'dependency-failed';
    case 'failed':
    case 'aborted':
    case 'timed-out':
    case 'log-limit-exceeded':
    case 'output-limit-exceeded':
    case 'cached-failure':
      return 'failed';
  }
}

function resultOf(view: DerivationView): Pick<JobsetAttribute, 'buildStatus' | 'failedDrv' | 'failure' | 'dependency'> {
  const outcome = isBuildStatus(view.status) ? attributeOutcomeOf(view.status) : 'failed';
  switch (outcome) {
    case 'dependency-failed': {
      const input = FAILED_INPUT.exec(view.error ?? '')?.[1];
      return { buildStatus: 'dependency-failed', ...(input === undefined ? {} : { dependency: input }) };
    }
    case 'failed':
      return { buildStatus: 'failed', failedDrv: view.drvPath, failure: view.status };
    default:
      return { buildStatus: outcome };
  }
}
