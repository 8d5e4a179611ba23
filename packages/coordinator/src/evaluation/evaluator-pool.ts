import type { Logger } from '@nixfarm/shared';
import { runEvaluator, type EvaluatorOutcome, type EvaluatorProcessOptions } from './evaluator-process.js';

/** What an evaluator process is doing, for logs and for tests that kill one mid-batch. */
export interface EvaluatorTask {
  kind: 'list' | 'instantiate';
  /** dotted attributes the task is about (the parent's for a listing) */
  attrs: readonly string[];
}

export type EvaluatorPoolEvent =
  | { type: 'spawned'; pid: number; task: EvaluatorTask; attempt: number }
  | { type: 'finished'; task: EvaluatorTask; outcome: EvaluatorOutcome['kind']; attempt: number };

export interface EvaluatorPoolOptions extends Omit<EvaluatorProcessOptions, 'onSpawn' | 'signal'> {
  logger: Logger;
  /** evaluator processes at once */
  workers: number;
  /** how often a task whose process was killed from outside is run again in a new process */
  maxRetries?: number;
  onEvent?: (event: EvaluatorPoolEvent) => void;
}

interface Waiting {
  start: () => void;
}

/**
 * At most `workers` nix-instantiate processes at once. Listings go before
 * instantiations: they find the work, so the pool keeps every slot busy.
 * A process killed from outside (not by its own memory bound or a crash of
 * the code it evaluates) is replaced and its task run again, up to
 * `maxRetries` times; the last outcome is returned either way.
 */
export class EvaluatorPool {
  private running = 0;
  private readonly waiting: Record<EvaluatorTask['kind'], Waiting[]> = { list: [], instantiate: [] };
  private readonly abort = new AbortController();
  private readonly maxRetries: number;

  constructor(private readonly options: EvaluatorPoolOptions) {
    if (!Number.isInteger(options.workers) || options.workers < 1) throw new RangeError(`evalWorkers must be an integer >= 1, not ${options.workers}`);
    this.maxRetries = options.maxRetries ?? 3;
  }

  async run(args: readonly string[], task: EvaluatorTask): Promise<EvaluatorOutcome> {
    let outcome: EvaluatorOutcome = { kind: 'cancelled' };
    for (let attempt = 1; attempt <= this.maxRetries + 1; attempt++) {
      outcome = await this.runOnce(args, task, attempt);
      if (outcome.kind !== 'killed') return outcome;
      this.options.logger.warn({ task, signal: outcome.signal, attempt }, 'evaluator killed from outside: running its task again in a new process');
    }
    return outcome;
  }

  /** Kills the running processes; queued tasks end cancelled. */
  cancel(): void {
    this.abort.abort();
    for (const queue of Object.values(this.waiting)) for (const w of queue.splice(0)) w.start();
  }

  private async runOnce(args: readonly string[], task: EvaluatorTask, attempt: number): Promise<EvaluatorOutcome> {
    await this.slot(task.kind);
    try {
      if (this.abort.signal.aborted) return { kind: 'cancelled' };
      const outcome = await runEvaluator(args, {
        ...this.options,
        signal: this.abort.signal,
        onSpawn: (pid) => this.options.onEvent?.({ type: 'spawned', pid, task, attempt }),
      });
      this.options.onEvent?.({ type: 'finished', task, outcome: outcome.kind, attempt });
      return outcome;
    } finally {
      this.release();
    }
  }

  private slot(kind: EvaluatorTask['kind']): Promise<void> {
    if (this.running < this.options.workers) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting[kind].push({ start: resolve }));
  }

  private release(): void {
    // the slot passes straight to the next task: `running` stays the same
    const next = this.waiting.list.shift() ?? this.waiting.instantiate.shift();
    if (next === undefined) this.running--;
    else next.start();
  }
}
