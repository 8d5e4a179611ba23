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
 * The jobset's top value as one Nix expression, `{...}@args: ...`: Nix
 * auto-calls it with the --arg/--argstr values, and it hands the jobset's
 * function the arguments it declares, as nix-instantiate's own auto-call
 * does. Discovery and instantiation both start from it, so both see the
 * same value for a file and for an expression.
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
  return `{ ... }@args:
let
  f = ${imported};
  top = if builtins.isFunction f then f (builtins.intersectAttrs (builtins.functionArgs f) args) else f;
in
`;
}

/**
 * -I, --arg and --argstr as nix-instantiate takes them, plus one argument of
 * our own: `nix-instantiate --eval` auto-calls the top function only when
 * some argument is given (the wrapper drops it again).
 */
export function sourceArguments(source: JobsetSource): string[] {
  const args: string[] = ['--arg', 'nixfarmJobset', 'true'];
  for (const include of source.includes ?? []) args.push('-I', include);
  for (const { name, expr } of source.args ?? []) args.push('--arg', name, expr);
  for (const { name, value } of source.argstrs ?? []) args.push('--argstr', name, value);
  return args;
}
