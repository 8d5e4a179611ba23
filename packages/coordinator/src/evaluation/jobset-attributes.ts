import { z } from 'zod';
import { NixfarmError } from '@nixfarm/shared';
import { dottedAttr, nixStringList } from './attribute-path.js';
import type { EvaluatorOutcome } from './evaluator-process.js';
import type { EvaluatorPool } from './evaluator-pool.js';
import { sourceArguments, topValueExpression, topValueHint, type JobsetSource } from './jobset-source.js';

/**
 * What discovery makes of one attribute's value, as nix-eval-jobs walks a
 * jobset: a derivation is a job; a set with `recurseForDerivations = true`
 * (any set under forceRecurse) is entered; another set is skipped, as
 * nix-eval-jobs skips it; anything else is `other` (not a derivation).
 * `failed` means forcing the value threw (throw, assert): instantiation
 * repeats it to get Nix's message, which tryEval does not give.
 */
export type AttributeKind = 'derivation' | 'recurse' | 'skip' | 'other' | 'failed';

export interface DiscoveredAttribute {
  attrPath: string[];
  kind: AttributeKind;
}

/** How one listing went: the children, or the children whose listing fails even alone (abort, infinite recursion, memory). */
export interface Listing {
  found: DiscoveredAttribute[];
  /** each failed alone; instantiating it gives the attribute its error */
  unlistable: string[][];
}

export interface AttributeDiscoveryOptions {
  source: JobsetSource;
  pool: EvaluatorPool;
  /** enter every attribute set, not only those with recurseForDerivations = true (nix-eval-jobs' --force-recurse) */
  forceRecurse: boolean;
}

const deepListingSchema = z.array(z.object({ path: z.array(z.string()).min(1), kind: z.enum(['derivation', 'other', 'failed']) }));
const listingSchema = z.array(z.object({ name: z.string(), kind: z.enum(['derivation', 'recurse', 'skip', 'other', 'failed']) }));

/** Even the top value cannot be listed: the whole evaluation cannot start (not one attribute's fault). */
export class TopLevelListingError extends NixfarmError {
  constructor(outcome: EvaluatorOutcome, hint: string) {
    const why = 'message' in outcome ? outcome.message : outcome.kind;
    super('evaluation-failed', `the jobset's top value is not an attribute set that can be listed:\n${why}\nhint: ${hint}`, {
      retryable: outcome.kind === 'killed',
    });
  }
}

/**
 * Lists the children of attribute sets with `nix-instantiate --eval --strict
 * --json`, each child forced under builtins.tryEval. tryEval does not catch
 * abort, infinite recursion, a stack overflow or the memory bound, so a
 * listing that fails is split in halves until the culprit stands alone: one
 * bad attribute never hides its siblings.
 */
export class AttributeDiscovery {
  private readonly top: string;
  private readonly args: string[];

  constructor(private readonly options: AttributeDiscoveryOptions) {
    this.top = topValueExpression(options.source);
    this.args = sourceArguments(options.source);
  }

  /** The children of the set at `parent` ([] for the top). */
  async list(parent: readonly string[]): Promise<Listing> {
    const all = await this.evaluate(parent, undefined);
    if (all.kind === 'ok') return { found: all.children, unlistable: [] };
    if (all.kind === 'cancelled') return { found: [], unlistable: [] };
    // Forcing some child failed the whole listing: get the names alone (that forces no child) and split.
    const names = await this.names(parent);
    if (names === undefined) {
      if (parent.length === 0) throw new TopLevelListingError(all.outcome, topValueHint(this.options.source));
      return { found: [], unlistable: [[...parent]] };
    }
    const listing: Listing = { found: [], unlistable: [] };
    await this.split(parent, names, listing);
    return listing;
  }

  private async split(parent: readonly string[], names: string[], into: Listing): Promise<void> {
    if (names.length === 0) return;
    const result = await this.evaluate(parent, names);
    if (result.kind === 'ok') {
      into.found.push(...result.children);
      return;
    }
    if (result.kind === 'cancelled') return;
    if (names.length === 1) {
      into.unlistable.push([...parent, names[0]!]);
      return;
    }
    const half = Math.ceil(names.length / 2);
    await Promise.all([this.split(parent, names.slice(0, half), into), this.split(parent, names.slice(half), into)]);
  }

  private async names(parent: readonly string[]): Promise<string[] | undefined> {
    const expr = `${this.top}  builtins.attrNames (builtins.foldl' (v: n: v.\${n}) top ${nixStringList(parent)})\n`;
    const outcome = await this.options.pool.run(this.evalArgs(expr), { kind: 'list', attrs: [dottedAttr(parent)] });
    return outcome.kind === 'ok' ? z.array(z.string()).parse(JSON.parse(outcome.stdout)) : undefined;
  }

  private async evaluate(
    parent: readonly string[],
    names: readonly string[] | undefined,
  ): Promise<{ kind: 'ok'; children: DiscoveredAttribute[] } | { kind: 'failed'; outcome: EvaluatorOutcome } | { kind: 'cancelled' }> {
    // The top set is always entered, as nix-eval-jobs does; recurseForDerivations is a marker, never a job.
    const expr = `${this.top}  let
    parent = builtins.foldl' (v: n: v.\${n}) top ${nixStringList(parent)};
    names = ${names === undefined ? 'builtins.attrNames parent' : nixStringList(names)};
${this.kindOf()}
    classify = name: let r = builtins.tryEval (kindOf parent.\${name}); in { inherit name; kind = if r.success then r.value else "failed"; };
  in map classify (builtins.filter (n: n != "recurseForDerivations") names)
`;
    const outcome = await this.options.pool.run(this.evalArgs(expr), { kind: 'list', attrs: [dottedAttr(parent)] });
    if (outcome.kind === 'cancelled') return { kind: 'cancelled' };
    if (outcome.kind !== 'ok') return { kind: 'failed', outcome };
    const children = listingSchema.parse(JSON.parse(outcome.stdout)).map(({ name, kind }) => ({ attrPath: [...parent, name], kind }));
    return { kind: 'ok', children };
  }

  /**
   * Every job below the given sets in one process: sets to enter are entered
   * by Nix itself, each value forced under tryEval as list() does. Fails as a
   * whole when anything tryEval does not catch is met anywhere below (the
   * caller then lists level by level, which isolates the culprit).
   */
  async listDeep(parents: readonly string[][]): Promise<{ kind: 'ok'; found: DiscoveredAttribute[] } | { kind: 'failed' } | { kind: 'cancelled' }> {
    const expr = `${this.top}  let
${this.kindOf()}
    walk = path: set: builtins.concatMap (name:
      let p = path ++ [ name ]; r = builtins.tryEval (kindOf set.\${name}); kind = if r.success then r.value else "failed"; in
      if kind == "recurse" then walk p set.\${name} else if kind == "skip" then [ ] else [ { path = p; inherit kind; } ])
      (builtins.filter (n: n != "recurseForDerivations") (builtins.attrNames set));
  in builtins.concatMap (parent: walk parent (builtins.foldl' (v: n: v.\${n}) top parent)) [ ${parents.map(nixStringList).join(' ')} ]
`;
    const outcome = await this.options.pool.run(this.evalArgs(expr), { kind: 'list', attrs: parents.map(dottedAttr) });
    if (outcome.kind === 'cancelled') return { kind: 'cancelled' };
    if (outcome.kind !== 'ok') return { kind: 'failed' };
    return { kind: 'ok', found: deepListingSchema.parse(JSON.parse(outcome.stdout)).map(({ path, kind }) => ({ attrPath: path, kind })) };
  }

  /** What a value is for discovery (AttributeKind), as a Nix function `kindOf`. */
  private kindOf(): string {
    const force = this.options.forceRecurse ? 'true' : 'false';
    return `    kindOf = v:
      if builtins.isAttrs v then
        (if (v.type or null) == "derivation" then "derivation"
         else if ${force} || (v.recurseForDerivations or false) == true then "recurse"
         else "skip")
      else "other";`;
  }

  private evalArgs(expr: string): string[] {
    return ['--eval', '--strict', '--json', ...this.args, '--expr', expr];
  }
}
