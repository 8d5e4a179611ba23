import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '@nixfarm/shared';
import { dottedAttr } from './attribute-path.js';
import type { AttributeResult } from './attribute-result.js';
import { BatchInstantiation } from './batch-instantiation.js';
import { EvaluatorPool, type EvaluatorPoolEvent } from './evaluator-pool.js';
import { AttributeDiscovery, type DiscoveredAttribute } from './jobset-attributes.js';
import { ResultStream } from './result-stream.js';
import type { JobsetSource } from './jobset-source.js';

export interface JobsetEvaluationOptions {
  source: JobsetSource;
  logger: Logger;
  /** `--option NAME VALUE` pairs for every Nix call (substituters, ...) */
  nixOptions: ReadonlyArray<readonly [string, string]>;
  env?: Record<string, string>;
  /** evaluator processes at once; os.cpus().length by default */
  evalWorkers?: number;
  /** each evaluator's heap bound (Boehm GC's GC_MAXIMUM_HEAP_SIZE), MiB; none by default */
  evalMaxMemoryMiB?: number;
  /** each evaluator process's time bound, ms; none by default */
  evalTimeoutMs?: number;
  /** enter every attribute set, not only those with recurseForDerivations = true */
  forceRecurse?: boolean;
  /**
   * A value in an entered set that is neither a derivation nor a set:
   * 'error' records it as the attribute's error (what the issue asks),
   * 'skip' ignores it silently (what nix-eval-jobs does).
   */
  nonDerivations?: 'error' | 'skip';
  /** attributes per nix-instantiate at most; smaller batches stream sooner, larger ones pay the process start less often */
  maxBatchSize?: number;
  /** runs of a task whose evaluator was killed from outside, after the first */
  maxRetries?: number;
  /** where the GC-root directory is made; os.tmpdir() by default */
  rootParent?: string;
  /** every evaluator process's start and end (tests kill one mid-batch with it) */
  onPoolEvent?: (event: EvaluatorPoolEvent) => void;
  /** after each set is listed: attributes found so far (each will get a result), and whether sets are still being listed */
  onDiscovery?: (discovery: Discovery) => void;
}

/** What listing the jobset has found so far. */
export interface Discovery {
  discovered: number;
  discovering: boolean;
}

/** Large: a process start and the top value's evaluation are paid per batch; batches ramp up from FIRST_BATCH to keep the first results early. */
const DEFAULT_MAX_BATCH = 500;
/** The first batch of an evaluation: one attribute, so that the first result (and build) waits for no other attribute. */
const FIRST_BATCH = 1;
/** Deep listings per evaluator that the sets below a level are spread over. */
const LISTINGS_PER_WORKER = 4;

const NOT_A_DERIVATION = 'expression does not evaluate to a derivation (or a set or list of those)';

/**
 * A whole jobset's evaluation: discovery and instantiation in a pool of
 * evaluator processes, each attribute's result streamed as soon as it is
 * known, the .drv files held by GC roots in a directory this evaluation
 * owns until close(). Start with open(); read results(); then close().
 */
export class JobsetEvaluation {
  private readonly stream = new ResultStream<AttributeResult>();
  private readonly pool: EvaluatorPool;
  private started = false;
  private closed = false;
  private done: Promise<void> = Promise.resolve();
  /** Settles when the top value is listed (or could not be): a run is accepted then, not when its first attribute is known. */
  private readonly topListed = settleable();

  private constructor(
    private readonly options: JobsetEvaluationOptions,
    /** the GC-root directory: removed by close() */
    readonly rootDir: string,
  ) {
    this.pool = new EvaluatorPool({
      logger: options.logger,
      workers: options.evalWorkers ?? cpus().length,
      nixOptions: options.nixOptions,
      ...(options.env === undefined ? {} : { env: options.env }),
      ...(options.evalMaxMemoryMiB === undefined ? {} : { maxMemoryMiB: options.evalMaxMemoryMiB }),
      ...(options.evalTimeoutMs === undefined ? {} : { timeoutMs: options.evalTimeoutMs }),
      ...(options.source.cwd === undefined ? {} : { cwd: options.source.cwd }),
      ...(options.maxRetries === undefined ? {} : { maxRetries: options.maxRetries }),
      ...(options.onPoolEvent === undefined ? {} : { onEvent: options.onPoolEvent }),
    });
  }

  static async open(options: JobsetEvaluationOptions): Promise<JobsetEvaluation> {
    const rootDir = await mkdtemp(join(options.rootParent ?? tmpdir(), 'nixfarm-eval-'));
    return new JobsetEvaluation(options, rootDir);
  }

  /**
   * Every attribute's result, in the order they become known. Ends when the
   * whole jobset is evaluated; throws if even the top value cannot be listed.
   */
  results(): AsyncIterable<AttributeResult> {
    this.start();
    return this.stream;
  }

  /** The same results, each group being all that became known since the last one was taken. */
  resultGroups(): AsyncIterable<AttributeResult[]> {
    this.start();
    return { [Symbol.asyncIterator]: () => this.stream.groups() };
  }

  /**
   * Starts evaluating; resolves once the top value is listed, rejects with
   * TopLevelListingError when it cannot be: whether the jobset can be
   * evaluated at all is known then, however long its first attribute takes.
   */
  async listTop(): Promise<void> {
    this.start();
    await this.topListed.promise;
  }

  private start(): void {
    if (!this.started) {
      this.started = true;
      this.done = this.evaluate().then(
        () => {
          this.topListed.resolve();
          this.stream.end();
        },
        (error: unknown) => {
          this.topListed.reject(error);
          this.stream.fail(error);
        },
      );
    }
  }

  /** Stops evaluating (kills the evaluators) and removes the GC roots: the .drv files may be collected after this. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.pool.cancel();
    await this.done;
    await rm(this.rootDir, { recursive: true, force: true });
  }

  private async evaluate(): Promise<void> {
    const started = Date.now();
    const maxRetries = this.options.maxRetries ?? 3;
    const discovery = new AttributeDiscovery({ source: this.options.source, pool: this.pool, forceRecurse: this.options.forceRecurse ?? false });
    const instantiation = new BatchInstantiation({
      source: this.options.source,
      pool: this.pool,
      rootDir: this.rootDir,
      maxRetries,
      ...(this.options.evalMaxMemoryMiB === undefined ? {} : { maxMemoryMiB: this.options.evalMaxMemoryMiB }),
      ...(this.options.evalTimeoutMs === undefined ? {} : { timeoutMs: this.options.evalTimeoutMs }),
    });
    const maxBatch = this.options.maxBatchSize ?? DEFAULT_MAX_BATCH;
    const workers = this.options.evalWorkers ?? cpus().length;
    let count = 0;
    // Sets being listed: a child's walk counts itself before its parent's listing is done, so 0 means discovery has ended.
    let listing = 0;
    let discovered = 0;
    const emit = (results: AttributeResult[]): void => {
      if (this.closed) return;
      count += results.length;
      this.stream.push(...results);
    };

    /** One listing ended having found `found` attributes (each will get a result): tell how far discovery is. */
    const listed = (found: number): void => {
      listing--;
      discovered += found;
      this.options.onDiscovery?.({ discovered, discovering: listing > 0 });
    };
    let nextBatch = FIRST_BATCH;
    /** Batches across the whole evaluation start small and double: the first results stream early, the bulk goes in few processes. */
    const instantiate = async (jobs: readonly string[][], alone: readonly string[][]): Promise<void> => {
      // small enough that every evaluator gets one, large enough to spread the process start
      const size = Math.max(1, Math.min(maxBatch, Math.ceil(jobs.length / workers)));
      const batches: string[][][] = [];
      for (let i = 0; i < jobs.length; ) {
        const next = Math.min(size, nextBatch);
        nextBatch = Math.min(maxBatch, nextBatch * 2);
        batches.push(jobs.slice(i, i + next));
        i += next;
      }
      // An attribute that failed to list goes alone: it would only make its batch split.
      for (const path of alone) batches.push([path]);
      await Promise.all(batches.map((batch) => instantiation.instantiate(batch, emit)));
    };

    /** The jobs below these sets: all in one listing if it can be, else split until the set that fails stands alone. */
    const walkDeep = async (parents: string[][]): Promise<void> => {
      listing++;
      const deep = await discovery.listDeep(parents);
      if (deep.kind === 'cancelled') {
        listed(0);
        return;
      }
      if (deep.kind === 'ok') {
        const jobs: string[][] = [];
        const alone: string[][] = [];
        let others = 0;
        for (const found of deep.found) others += this.sort(found, jobs, alone, [], emit);
        listed(jobs.length + alone.length + others);
        await instantiate(jobs, alone);
        return;
      }
      // The split's listings are counted (synchronously, as they start) before this one ends: discovery never looks over early.
      const split =
        parents.length > 1
          ? Promise.all([walkDeep(parents.slice(0, Math.ceil(parents.length / 2))), walkDeep(parents.slice(Math.ceil(parents.length / 2)))])
          : walkLevel(parents[0]!);
      listed(0);
      await split;
    };
    /**
     * Sets below a level, listed deeply in a few groups at once: a few
     * processes instead of one per set, and not one for all, so that sets
     * whose values are slow to force do not hold up every other set.
     */
    const spread = async (sets: string[][]): Promise<void> => {
      const size = Math.ceil(sets.length / Math.min(sets.length, LISTINGS_PER_WORKER * workers));
      const groups: Promise<void>[] = [];
      for (let i = 0; i < sets.length; i += size) groups.push(walkDeep(sets.slice(i, i + size)));
      await Promise.all(groups);
    };
    /** One level, with each culprit split out (list()), its jobs instantiated while the sets below are listed. */
    const walkLevel = async (parent: string[]): Promise<void> => {
      listing++;
      const level = await discovery.list(parent);
      if (parent.length === 0) this.topListed.resolve();
      const jobs: string[][] = [];
      const alone: string[][] = [...level.unlistable];
      const below: string[][] = [];
      let others = 0;
      for (const found of level.found) others += this.sort(found, jobs, alone, below, emit);
      const deeper = spread(below);
      listed(jobs.length + alone.length + others);
      await Promise.all([instantiate(jobs, alone), deeper]);
    };
    await walkLevel([]);
    this.options.logger.info({ attributes: count, ms: Date.now() - started }, 'jobset evaluated');
  }

  /** Files one listed attribute under what becomes of it; answers how many results it gave at once (a value that is not a derivation). */
  private sort(found: DiscoveredAttribute, jobs: string[][], alone: string[][], below: string[][], emit: (results: AttributeResult[]) => void): number {
    switch (found.kind) {
      case 'derivation':
        jobs.push(found.attrPath);
        return 0;
      case 'failed':
        alone.push(found.attrPath);
        return 0;
      case 'recurse':
        below.push(found.attrPath);
        return 0;
      case 'skip':
        return 0;
      case 'other':
        if (this.options.nonDerivations === 'skip') return 0;
        emit([
          {
            attr: dottedAttr(found.attrPath),
            attrPath: found.attrPath,
            error: `error: ${dottedAttr(found.attrPath)} is not a derivation: ${NOT_A_DERIVATION}`,
            errorKind: 'not-a-derivation',
          },
        ]);
        return 1;
    }
  }
}

/** A promise settled from outside (Promise.withResolvers is Node 22). Its rejection is handled here: an unread one must not crash the process. */
function settleable(): { promise: Promise<void>; resolve: () => void; reject: (error: unknown) => void } {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}
