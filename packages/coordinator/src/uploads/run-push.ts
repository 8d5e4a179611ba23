import type { UploadRecord } from '@nixfarm/shared';
import type { RunService } from '../runs/run-service.js';
import type { RunAttributes } from '../runs/run-attributes.js';
import type { OutputVerifier } from '../nix/output-verifier.js';
import type { UploadQueue } from './upload-queue.js';
import { checkUploadTarget, parseUploadTarget } from './upload-target.js';

export interface RunPushDeps {
  runs: Pick<RunService, 'get'>;
  attributes: Pick<RunAttributes, 'page'>;
  verifier: Pick<OutputVerifier, 'invalidPaths'>;
  uploads: Pick<UploadQueue, 'enqueue' | 'ofRun'>;
}

/** `nixfarm push RUN --to URL`: a past run's outputs, those still in the coordinator's store, queued for upload to the named caches. */
export class RunPush {
  constructor(private readonly deps: RunPushDeps) {}

  async push(runId: string, urls: readonly string[]): Promise<UploadRecord[]> {
    const targets = urls.map(parseUploadTarget);
    for (const target of targets) await checkUploadTarget(target);
    const run = await this.deps.runs.get(runId);
    const attributeOutputs = run.evaluation === undefined ? [] : (await this.deps.attributes.page(runId)).flatMap((a) => Object.values(a.outputs ?? {}));
    const outputs = [...new Set([...run.results.map((r) => r.outputPath), ...attributeOutputs])];
    // A run that failed or was cancelled pushes what it did build; what is gone from the store (collected) cannot be pushed.
    const invalid = await this.deps.verifier.invalidPaths(outputs);
    await this.deps.uploads.enqueue(
      runId,
      outputs.filter((o) => !invalid.has(o)),
      targets,
      true,
    );
    return this.deps.uploads.ofRun(runId);
  }
}
