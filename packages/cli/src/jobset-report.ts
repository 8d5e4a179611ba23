import type { AttributeListResponse, JobsetAttribute } from '@nixfarm/shared';
import type { ApiClient } from './api-client.js';
import { EXIT_BUILD_FAILED, EXIT_OK } from './exit-codes.js';

/** Attributes per request: pages keep each answer small on a jobset of thousands. */
const PAGE = 1000;

/**
 * The end of `nixfarm build --jobset`: one line per attribute with its
 * result on stderr and the output paths of attributes that built on stdout,
 * or (--json) one JSON line per attribute on stdout with nix-eval-jobs'
 * fields plus the build result. 0 when every attribute built, 1 otherwise.
 */
export async function printJobsetReport(client: ApiClient, runId: string, options: { json: boolean }): Promise<number> {
  const attributes: JobsetAttribute[] = [];
  let page: AttributeListResponse;
  do {
    page = await client.get<AttributeListResponse>(`/api/runs/${encodeURIComponent(runId)}/attributes?offset=${attributes.length}&limit=${PAGE}`);
    attributes.push(...page.attributes);
  } while (page.attributes.length > 0 && attributes.length < page.total);
  let bad = 0;
  for (const a of attributes) {
    const built = a.buildStatus === 'succeeded' || a.buildStatus === 'cached';
    if (!built) bad++;
    if (options.json) process.stdout.write(`${JSON.stringify(a)}\n`);
    else if (built) for (const out of Object.values(a.outputs ?? {})) process.stdout.write(`${out}\n`);
    process.stderr.write(`${a.attr}: ${describe(a)}\n`);
  }
  const { evaluation } = page;
  const stopped = evaluation.state === 'done' ? '' : ` (evaluation ${evaluation.state}${evaluation.error === undefined ? '' : `: ${evaluation.error}`})`;
  process.stderr.write(
    `nixfarm: run ${runId}: ${attributes.length - bad} of ${attributes.length} attributes built, ${evaluation.failed} failed to evaluate${stopped}\n`,
  );
  return bad === 0 && evaluation.state === 'done' ? EXIT_OK : EXIT_BUILD_FAILED;
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
