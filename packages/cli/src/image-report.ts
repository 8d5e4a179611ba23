import type { ImagePublication, RunView } from '@nixfarm/shared';
import type { ApiClient } from './api-client.js';

/** Whether a run asked for its images to be published (its request as the coordinator stored it). */
function publishesImages(run: RunView): boolean {
  return typeof (run.request as { publishImages?: unknown } | null)?.publishImages === 'string';
}

function describe(p: ImagePublication): string {
  switch (p.state) {
    case 'published':
      return `published ${p.attr || p.outputPath} as ${p.references.join(', ')} (${p.digest ?? 'no digest'})`;
    case 'not-an-image':
      return `${p.attr || p.outputPath}: not an image (${p.outputPath}), not published`;
    case 'failed':
      return `IMAGE NOT PUBLISHED: ${p.attr || p.outputPath}: ${p.error ?? 'unknown error'}`;
    case 'pending':
      return `${p.attr || p.outputPath}: try ${p.attempts} failed (${p.error ?? 'unknown error'}); retrying`;
  }
}

/**
 * Once a run has ended, waits for the images it publishes to settle (pushed,
 * not an image, or failed after the coordinator's retries), printing each
 * change on stderr; returns the run as it is then. A run that did not ask
 * for images, or was cancelled, is returned as it is.
 */
export async function awaitImagePublications(client: ApiClient, ended: RunView, pollMs = 500): Promise<RunView> {
  if (!publishesImages(ended) || ended.status === 'cancelled') return ended;
  const seen = new Map<number, string>();
  let run = ended;
  let announced = false;
  for (;;) {
    const images = run.images ?? [];
    if (!announced && images.length > 0) {
      process.stderr.write(`nixfarm: publishing ${images.length} output${images.length === 1 ? '' : 's'} that may be images\n`);
      announced = true;
    }
    images.forEach((p, i) => {
      const line = describe(p);
      if (p.state === 'pending' && p.attempts === 0) return;
      if (seen.get(i) !== line) process.stderr.write(`nixfarm: ${line}\n`);
      seen.set(i, line);
    });
    if (run.images !== undefined && images.every((p) => p.state !== 'pending')) return run;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
    run = await client.getRun(run.id);
  }
}

/** Whether any image of the run failed to publish. */
export function imagesFailed(run: RunView): boolean {
  return (run.images ?? []).some((p) => p.state === 'failed');
}
