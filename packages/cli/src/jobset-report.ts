import type { AttributeListResponse, EvaluationProgress, JobsetAttribute } from '@nixfarm/shared';
import type { ApiClient } from './api-client.js';
import { EXIT_BUILD_FAILED, EXIT_OK } from './exit-codes.js';
import { writeJunitReport } from './junit-report.js';

/** Attributes per request: pages keep each answer small on a jobset of thousands. */
const PAGE = 1000;

export interface JobsetReportOptions {
  json: boolean;
  /** the run only evaluated: lines carry nix-eval-jobs' fields alone, with isCached */
  evalOnly: boolean;
  /** write a JUnit XML report here too */
  junit?: string;
}

/**
 * The end of `nixfarm build --jobset`: one line per attribute with its
 * result on stderr and the output paths of attributes that built on stdout,
 * or (--json) one JSON line per attribute on stdout with nix-eval-jobs'
 * fields plus the build result. With --eval-only the .drv paths (or the
 * lines of `nix-eval-jobs --check-cache-status`) instead. 0 when every
 * attribute built (evaluated, with --eval-only), 1 otherwise.
 */
export async function printJobsetReport(client: ApiClient, runId: string, options: JobsetReportOptions): Promise<number> {
  const attributes: JobsetAttribute[] = [];
  let page: AttributeListResponse;
  do {
    page = await client.get<AttributeListResponse>(`/api/runs/${encodeURIComponent(runId)}/attributes?offset=${attributes.length}&limit=${PAGE}`);
    attributes.push(...page.attributes);
  } while (page.attributes.length > 0 && attributes.length < page.total);
  const { evaluation } = page;
  const bad = options.evalOnly ? printEvaluated(attributes, options.json) : printBuilt(attributes, options.json);
  const stopped = evaluation.state === 'done' ? '' : ` (evaluation ${evaluation.state}${evaluation.error === undefined ? '' : `: ${evaluation.error}`})`;
  process.stderr.write(`nixfarm: run ${runId}: ${summary(attributes, evaluation, options.evalOnly)}${stopped}\n`);
  if (options.junit !== undefined) {
    await writeJunitReport(client, runId, attributes, evaluation, options.junit);
    process.stderr.write(`nixfarm: JUnit report in ${options.junit}\n`);
  }
  return bad === 0 && evaluation.state === 'done' ? EXIT_OK : EXIT_BUILD_FAILED;
}

/** Attributes that did not build; prints each. */
function printBuilt(attributes: readonly JobsetAttribute[], json: boolean): number {
  let bad = 0;
  for (const a of attributes) {
    const built = a.buildStatus === 'succeeded' || a.buildStatus === 'cached';
    if (!built) bad++;
    if (json) process.stdout.write(`${JSON.stringify(a)}\n`);
    else if (built) for (const out of Object.values(a.outputs ?? {})) process.stdout.write(`${out}\n`);
    process.stderr.write(`${a.attr}: ${describe(a)}\n`);
  }
  return bad;
}

/** Attributes that failed to evaluate; prints each as nix-eval-jobs would (--json) or its .drv path. */
function printEvaluated(attributes: readonly JobsetAttribute[], json: boolean): number {
  let bad = 0;
  for (const a of attributes) {
    if (a.drvPath === undefined) bad++;
    if (json) process.stdout.write(`${JSON.stringify(evalJobsLine(a))}\n`);
    else if (a.drvPath !== undefined) process.stdout.write(`${a.drvPath}\n`);
    process.stderr.write(`${a.attr}: ${a.drvPath === undefined ? describe(a) : a.isCached ? 'cached' : 'not built'}\n`);
  }
  return bad;
}

/** Exactly the fields `nix-eval-jobs --check-cache-status` prints, so its readers read ours. */
function evalJobsLine(a: JobsetAttribute): Record<string, unknown> {
  if (a.drvPath === undefined) return { attr: a.attr, attrPath: a.attrPath, error: a.error };
  return { attr: a.attr, attrPath: a.attrPath, drvPath: a.drvPath, isCached: a.isCached, name: a.name, outputs: a.outputs, system: a.system };
}

function summary(attributes: readonly JobsetAttribute[], evaluation: EvaluationProgress, evalOnly: boolean): string {
  if (!evalOnly) {
    const built = attributes.filter((a) => a.buildStatus === 'succeeded' || a.buildStatus === 'cached').length;
    return `${built} of ${attributes.length} attributes built, ${evaluation.failed} failed to evaluate`;
  }
  const cached = attributes.filter((a) => a.isCached === true).length;
  return `${attributes.length} attributes evaluated (${cached} cached, nothing built), ${evaluation.failed} failed to evaluate`;
}

function describe(a: JobsetAttribute): string {
  switch (a.buildStatus) {
    case 'evaluation-failed':
      return `evaluation failed (${a.errorKind ?? 'error'}): ${(a.error ?? '').trim().split('\n').at(-1)}`;
    case 'failed':
      return `build failed (${a.failure ?? 'failed'}): ${a.failedDrv ?? a.drvPath}`;
    case 'dependency-failed':
      return `dependency failed: ${a.dependency ?? 'an input'}`;
    default:
      return a.buildStatus;
  }
}
