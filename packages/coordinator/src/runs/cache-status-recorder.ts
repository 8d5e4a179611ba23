import { setImmediate as nextTurn } from 'node:timers/promises';
import type { EvaluatedAttribute } from '@nixfarm/shared';
import { isFailedAttribute, type AttributeResult } from '../evaluation/attribute-result.js';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';
import type { RunAttributes } from './run-attributes.js';

export interface CacheStatusRecorderDeps {
  /** validity in the coordinator's store: one query for a whole group of attributes */
  nix: Pick<CoordinatorNix, 'invalidPaths'>;
  attributes: Pick<RunAttributes, 'record'>;
}

/**
 * An eval-only run's attributes, recorded in evaluation order with
 * nix-eval-jobs' `isCached` (every output valid in the coordinator's store).
 * Attributes that arrive while a validity query runs wait for the next one,
 * so a batch of evaluated attributes costs one query, not one each.
 */
export class CacheStatusRecorder {
  private queued: AttributeResult[] = [];
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly runId: string,
    private readonly deps: CacheStatusRecorderDeps,
  ) {}

  push(result: AttributeResult): void {
    if (this.queued.length === 0) this.chain = this.chain.then(() => this.flush());
    this.queued.push(result);
  }

  /** Resolves once every attribute pushed so far is recorded; rejects if a query or a record failed. */
  drained(): Promise<void> {
    return this.chain;
  }

  private async flush(): Promise<void> {
    // One turn of the event loop: the rest of an evaluated batch arrives in it.
    await nextTurn();
    const batch = this.queued;
    this.queued = [];
    if (batch.length === 0) return;
    const outputs = batch.flatMap((r) => (isFailedAttribute(r) ? [] : Object.values(r.outputs).filter((o) => o !== '')));
    const invalid = await this.deps.nix.invalidPaths(outputs);
    for (const r of batch) {
      const attribute: EvaluatedAttribute = isFailedAttribute(r)
        ? { attr: r.attr, attrPath: r.attrPath, error: r.error, errorKind: r.errorKind }
        : {
            attr: r.attr,
            attrPath: r.attrPath,
            drvPath: r.drvPath,
            outputs: r.outputs,
            system: r.system,
            name: r.name,
            // a content-addressed output has no path yet: it cannot be valid
            isCached: Object.values(r.outputs).every((o) => o !== '' && !invalid.has(o)),
          };
      await this.deps.attributes.record(this.runId, attribute);
    }
  }
}
