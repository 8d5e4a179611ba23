import { readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { assertDerivationPath, parseDerivation } from '@nixfarm/shared';
import { z } from 'zod';
import { dottedAttr, nixStringList } from './attribute-path.js';
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

/** The batch derivation's env variable that carries each job's result, in the batch's order. */
const JOBS_VARIABLE = 'nixfarmJobs';
/** Thrown by the batch expression for a value that is not a derivation: an attribute alone with it is `not-a-derivation`. */
const NOT_A_DERIVATION_MARK = 'nixfarm-not-a-derivation';

const jobsSchema = z.array(
  z.union([z.null(), z.object({ drvPath: z.string(), name: z.string(), system: z.string(), outputs: z.record(z.string(), z.string()) })]),
);

/**
 * Instantiates a batch of attributes in one nix-instantiate, as one *batch
 * derivation*: its env holds the JSON of every job (drvPath, name, system,
 * outputs) and its references are every job's .drv. One `--add-root` on it
 * holds every .drv of the batch (and their closures) before Nix exits, so
 * there is no moment when a .drv is unprotected: Nix's temporary roots cover
 * it until the permanent root exists. One root and one file read per batch
 * instead of one per attribute (measured: the per-attribute roots were half
 * the evaluation's time). The batch derivation is never built.
 *
 * A job whose derivation throws (throw, assert: what tryEval catches) is
 * marked and instantiated alone for Nix's message; anything tryEval does not
 * catch (abort, infinite recursion, the memory bound) fails the whole batch,
 * which is split in halves until the culprit stands alone.
 */
export class BatchInstantiation {
  private readonly top: string;
  private readonly args: string[];
  private roots = 0;

  constructor(private readonly options: BatchInstantiationOptions) {
    this.top = topValueExpression(options.source);
    this.args = sourceArguments(options.source);
  }

  /** Results of every attribute of the batch; `emit` gets each sub-batch's as soon as it is known. */
  async instantiate(attrPaths: readonly string[][], emit: (results: AttributeResult[]) => void): Promise<void> {
    if (attrPaths.length === 0) return;
    const root = join(this.options.rootDir, `batch-${++this.roots}`);
    const args = [...this.args, '--add-root', root, '--indirect', '--expr', this.batchExpression(attrPaths)];
    const outcome = await this.options.pool.run(args, { kind: 'instantiate', attrs: attrPaths.map(dottedAttr) });
    if (outcome.kind === 'cancelled') return;
    if (outcome.kind === 'ok') {
      const jobs = await this.jobsOf(outcome.stdout);
      const results: AttributeResult[] = [];
      const threw: string[][] = [];
      for (const [i, job] of jobs.entries()) {
        const attrPath = attrPaths[i]!;
        if (job !== null) results.push({ attr: dottedAttr(attrPath), attrPath, ...job, drvPath: assertDerivationPath(job.drvPath) });
        else if (attrPaths.length === 1) results.push(this.failed(attrPath, 'evaluation-error', `error: evaluation of ${dottedAttr(attrPath)} failed`));
        else threw.push(attrPath);
      }
      emit(results);
      // tryEval hides Nix's message: each one alone fails outside tryEval and gives it.
      await Promise.all(threw.map((attrPath) => this.instantiate([attrPath], emit)));
      return;
    }
    if (attrPaths.length === 1) {
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

  /**
   * The batch derivation. A batch of one is evaluated outside tryEval, so
   * that its failure is Nix's own message. drvPath's context is made a plain
   * path (unsafeDiscardOutputDependency): the batch references each .drv
   * without Nix walking each one's closure into its inputs.
   */
  private batchExpression(attrPaths: readonly string[][]): string {
    const guard = attrPaths.length === 1 ? 'job' : 'guarded';
    return `${this.top}  let
    at = path: builtins.foldl' (v: n: v.\${n}) top path;
    job = path: let v = at path; in
      if !(builtins.isAttrs v && (v.type or null) == "derivation") then throw "${NOT_A_DERIVATION_MARK}: \${builtins.concatStringsSep "." path} is not a derivation"
      else {
        drvPath = builtins.unsafeDiscardOutputDependency v.drvPath;
        name = v.name;
        system = v.system;
        outputs = builtins.listToAttrs (map (o: { name = o; value = builtins.unsafeDiscardStringContext v.\${o}.outPath; }) (v.outputs or [ "out" ]));
      };
    guarded = path: let r = builtins.tryEval (let j = job path; in builtins.deepSeq j j); in if r.success then r.value else null;
  in derivation {
    name = "nixfarm-batch";
    system = "nixfarm";
    builder = "nixfarm-never-builds-this";
    ${JOBS_VARIABLE} = builtins.toJSON (map ${guard} [ ${attrPaths.map(nixStringList).join(' ')} ]);
  }
`;
  }

  /** The jobs of the batch derivation whose root nix-instantiate printed. */
  private async jobsOf(stdout: string): Promise<z.infer<typeof jobsSchema>> {
    const printed = stdout.trim();
    const drvPath = assertDerivationPath(printed.startsWith('/nix/store/') ? printed : await readlink(printed));
    const batch = parseDerivation(drvPath, await readFile(drvPath, 'utf8'));
    return jobsSchema.parse(JSON.parse(batch.env[JOBS_VARIABLE] ?? 'null'));
  }

  /** The lone attribute's error, in Nix's words where Nix had any. */
  failure(attrPath: string[], outcome: Exclude<EvaluatorOutcome, { kind: 'ok' | 'cancelled' }>): AttributeResult {
    const attr = dottedAttr(attrPath);
    switch (outcome.kind) {
      case 'failed':
        return outcome.message.includes(NOT_A_DERIVATION_MARK)
          ? this.failed(attrPath, 'not-a-derivation', outcome.message.replace(`${NOT_A_DERIVATION_MARK}: `, ''))
          : this.failed(attrPath, 'evaluation-error', outcome.message);
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
