/** Attribute paths as nix-eval-jobs names them (`attr`, dotted) and as `-A` and Nix expressions need them. */

const IDENTIFIER = /^[a-zA-Z_][a-zA-Z0-9_'-]*$/;

/** nix-eval-jobs' `attr`: the names joined with dots, as given (no quoting). */
export function dottedAttr(attrPath: readonly string[]): string {
  return attrPath.join('.');
}

/** The path for `nix-instantiate -A`: a name that is not an identifier is quoted, so `"a.b"` stays one name. */
export function attrPathArgument(attrPath: readonly string[]): string {
  return attrPath.map((name) => (IDENTIFIER.test(name) ? name : JSON.stringify(name))).join('.');
}

/** A Nix string literal of any text (`${` escaped: nothing is interpolated). */
export function nixStringLiteral(text: string): string {
  return JSON.stringify(text).replace(/\$\{/g, '\\${');
}

/** A Nix list of string literals. */
export function nixStringList(names: readonly string[]): string {
  return `[ ${names.map(nixStringLiteral).join(' ')} ]`;
}
