import { readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { assertDerivationPath, parseDerivation } from '@nixfarm/shared';
import { attrPathArgument, dottedAttr } from './attribute-path.js';
import type { AttributeErrorKind, AttributeResult } from './attribute-result.js';
import type { EvaluatorOutcome } from './evaluator-process.js';
import type { EvaluatorPool } from './evaluator-pool.js';
import { sourceArguments, topValueExpression, type JobsetSource } from './jobset-source.js';

export interface BatchInstantiationOptions {
  source: JobsetSource;
  pool: EvaluatorPool;
  /** the evaluation's GC-root directory: every .drv is held by a root in it */
  rootDir: string;
  /** for the memory error's words */
  maxMemoryMiB?: number;
  timeoutMs?: number;
  maxRetries: number;
}

/**
 * `nix-instantiate -A a -A b ...` over a batch, with `--add-root` so each
 * .drv is held by a GC root in the evaluation's directory. Nix prints one
 * root per -A, in order. A batch that fails is split in halves until the
 * culprit stands alone; the lone failure is that attribute's error.
 */
export class BatchInstantiation {
  private readonly top: string;
  private readonly args: string[];
  private roots = 0;

  constructor(private readonly options: BatchInstantiationOptions) {
    this.top = `${topValueExpression(options.source)}  top\n`;
    this.args = sourceArguments(options.source);
  }

  /** Results of every attribute of the batch; `emit` gets each sub-batch's as soon as it is known. */
  async instantiate(attrPaths: readonly string[][], emit: (results: AttributeResult[]) => void): Promise<void> {
    if (attrPaths.length === 0) return;
    const root = join(this.options.rootDir, `batch-${++this.roots}`);
    const args = [...this.args, ...attrPaths.flatMap((p) => ['-A', attrPathArgument(p)]), '--add-root', root, '--indirect', '--expr', this.top];
    const outcome = await this.options.pool.run(args, { kind: 'instantiate', attrs: attrPaths.map(dottedAttr) });
    if (outcome.kind === 'cancelled') return;
    if (outcome.kind === 'ok') {
      const lines = outcome.stdout.split('\n').filter((l) => l.length > 0);
      if (lines.length === attrPaths.length) {
        emit(await Promise.all(attrPaths.map((p, i) => this.evaluated(p, lines[i]!))));
        return;
      }
      // An attribute gave several derivations (a list): only alone can its lines be told apart.
      if (attrPaths.length === 1) {
        emit([this.failed(attrPaths[0]!, 'not-a-derivation', `error: ${lines.length} derivations, not one: the attribute is not a derivation`)]);
        return;
      }
    } else if (attrPaths.length === 1) {
      emit([this.failure(attrPaths[0]!, outcome)]);
      return;
    }
    // A killed batch is not split: the pool already ran it again in new processes, the kill is nobody's fault in it.
    if (outcome.kind === 'killed') {
      emit(attrPaths.map((p) => this.failure(p, outcome)));
      return;
    }
    const half = Math.ceil(attrPaths.length / 2);
    await Promise.all([this.instantiate(attrPaths.slice(0, half), emit), this.instantiate(attrPaths.slice(half), emit)]);
  }

  private async evaluated(attrPath: string[], line: string): Promise<AttributeResult> {
    // With --add-root, Nix prints the root (plus `!output` when the default output is not `out`), not the store path.
    const bang = line.lastIndexOf('!');
    const printed = bang >= 0 ? line.slice(0, bang) : line;
    const drvPath = assertDerivationPath(printed.startsWith('/nix/store/') ? printed : await readlink(printed));
    const drv = parseDerivation(drvPath, await readFile(drvPath, 'utf8'));
    return { attr: dottedAttr(attrPath), attrPath, drvPath, name: drv.name, system: drv.system, outputs: drv.outputs };
  }

  /** The lone attribute's error, in Nix's words where Nix had any. */
  failure(attrPath: string[], outcome: Exclude<EvaluatorOutcome, { kind: 'ok' | 'cancelled' }>): AttributeResult {
    const attr = dottedAttr(attrPath);
    switch (outcome.kind) {
      case 'failed':
        return this.failed(attrPath, 'evaluation-error', outcome.message);
      case 'out-of-memory':
        return this.failed(attrPath, 'out-of-memory', `evaluation of ${attr} exceeded --eval-max-memory ${this.options.maxMemoryMiB} MiB\n${outcome.message}`);
      case 'timed-out':
        return this.failed(attrPath, 'timed-out', `evaluation of ${attr} took longer than ${(this.options.timeoutMs ?? 0) / 1000} s (--eval-timeout)`);
      case 'crashed':
        return this.failed(
          attrPath,
          'evaluator-crashed',
          `evaluation of ${attr} crashed Nix with ${outcome.signal} (a stack overflow from deep recursion, most likely)`,
        );
      case 'killed':
        return this.failed(
          attrPath,
          'evaluator-killed',
          `the evaluator of ${attr} was killed by ${outcome.signal} ${this.options.maxRetries + 1} times (not by its memory bound)`,
        );
    }
  }

  failed(attrPath: string[], errorKind: AttributeErrorKind, error: string): AttributeResult {
    return { attr: dottedAttr(attrPath), attrPath, error, errorKind };
  }
}
