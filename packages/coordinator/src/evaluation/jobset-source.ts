import { isAbsolute, resolve } from 'node:path';
import { ValidationError } from '@nixfarm/shared';
import { nixStringLiteral } from './attribute-path.js';
import type { FlakeReference } from './flake-reference.js';

/** What a jobset is: a file (or directory with default.nix), an expression, or a flake's attribute; with nix-build's --arg, --argstr and -I. */
export interface JobsetSource {
  file?: string;
  expr?: string;
  /** parsed and resolved (flake-reference.ts); takes no --arg or --argstr */
  flake?: FlakeReference;
  args?: ReadonlyArray<{ name: string; expr: string }>;
  argstrs?: ReadonlyArray<{ name: string; value: string }>;
  includes?: readonly string[];
  /** where relative paths (the file, paths in expr) resolve; the process's cwd by default */
  cwd?: string;
}

/**
 * The jobset's top value as the start of one Nix expression (`let ... top =
 * ...; in`). The --arg and --argstr values are spliced in as bindings rather
 * than given to Nix's auto-call: `-A` auto-calls a function root once per
 * attribute, which evaluates the whole jobset again for each one (measured:
 * 10x slower on 2,000 attributes); a plain value is shared by every `-A` of
 * a batch. The jobset's function gets the arguments it declares, as
 * nix-instantiate's auto-call gives them.
 */
export function topValueExpression(source: JobsetSource): string {
  const given = [source.file, source.expr, source.flake].filter((v) => v !== undefined).length;
  if (given !== 1) throw new ValidationError('a jobset is a file, an expression or a flake: give exactly one');
  if (source.flake !== undefined) {
    if ((source.args ?? []).length > 0 || (source.argstrs ?? []).length > 0) {
      throw new ValidationError("--arg and --argstr do not apply to a flake (its outputs take no arguments): put the values in the flake's outputs instead");
    }
    // The outputs, as nix-eval-jobs selects the fragment in them (not Nix's packages.<system> guessing); the flake feature is enabled per call by sourceArguments.
    const selection = source.flake.attrPath.map(nixStringLiteral).join('.');
    return `let
  top = (builtins.getFlake ${nixStringLiteral(source.flake.url)}).outputs.${selection};
in
`;
  }
  let imported: string;
  if (source.file !== undefined) {
    const file = isAbsolute(source.file) ? source.file : resolve(source.cwd ?? process.cwd(), source.file);
    imported = `import (/. + ${nixStringLiteral(file)})`;
  } else {
    imported = `(${source.expr}\n)`;
  }
  const bindings = [
    ...(source.args ?? []).map(({ name, expr }) => `    ${nixStringLiteral(name)} = (${expr}\n);`),
    ...(source.argstrs ?? []).map(({ name, value }) => `    ${nixStringLiteral(name)} = ${nixStringLiteral(value)};`),
  ];
  return `let
  args = {
${bindings.join('\n')}
  };
  f = ${imported};
  top = if builtins.isFunction f then f (builtins.intersectAttrs (builtins.functionArgs f) args) else f;
in
`;
}

/**
 * -I as nix-instantiate takes it (the arguments are in the expression), and
 * for a flake Nix's experimental flakes feature, enabled for these calls only
 * (Nix 2.8 has builtins.getFlake only with it; the user's nix.conf is left alone).
 */
export function sourceArguments(source: JobsetSource): string[] {
  const flakes = source.flake === undefined ? [] : ['--option', 'extra-experimental-features', 'flakes'];
  return [...flakes, ...(source.includes ?? []).flatMap((include) => ['-I', include])];
}

/** What to check when even the top value of this jobset cannot be listed (added to Nix's message). */
export function topValueHint(source: JobsetSource): string {
  if (source.flake === undefined) return 'check that the file or expression evaluates to an attribute set of derivations';
  const attr = source.flake.attrPath.join('.');
  return `check the flake reference ${source.flake.url} and the attribute ${attr} in its outputs (e.g. #hydraJobs or #checks.x86_64-linux); in a git repository Nix sees only tracked files (git add flake.nix and what it reads)`;
}
