import { isAbsolute, resolve } from 'node:path';
import { ValidationError } from '@nixfarm/shared';
import { nixStringLiteral } from './attribute-path.js';

/** What a jobset is: a file (or directory with default.nix) or an expression, with nix-build's --arg, --argstr and -I. */
export interface JobsetSource {
  file?: string;
  expr?: string;
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
  let imported: string;
  if (source.file !== undefined && source.expr === undefined) {
    const file = isAbsolute(source.file) ? source.file : resolve(source.cwd ?? process.cwd(), source.file);
    imported = `import (/. + ${nixStringLiteral(file)})`;
  } else if (source.expr !== undefined && source.file === undefined) {
    imported = `(${source.expr}\n)`;
  } else {
    throw new ValidationError('a jobset is a file or an expression: give exactly one');
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

/** -I as nix-instantiate takes it (the arguments are in the expression). */
export function sourceArguments(source: JobsetSource): string[] {
  return (source.includes ?? []).flatMap((include) => ['-I', include]);
}
