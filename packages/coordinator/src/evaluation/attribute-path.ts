/** Attribute paths as nix-eval-jobs names them (`attr`, dotted) and as Nix expressions need them. */

/** nix-eval-jobs' `attr`: the names joined with dots, as given (no quoting). */
export function dottedAttr(attrPath: readonly string[]): string {
  return attrPath.join('.');
}

/** A Nix string literal of any text (`${` escaped: nothing is interpolated). */
export function nixStringLiteral(text: string): string {
  return JSON.stringify(text).replace(/\$\{/g, '\\${');
}

/** A Nix list of string literals. */
export function nixStringList(names: readonly string[]): string {
  return `[ ${names.map(nixStringLiteral).join(' ')} ]`;
}
