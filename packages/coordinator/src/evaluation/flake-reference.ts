import { existsSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { ValidationError } from '@nixfarm/shared';

/** A flake reference as builtins.getFlake takes it, and the attribute path of its outputs that is the jobset. */
export interface FlakeReference {
  /** absolute and, for a local directory, in the form the nix CLI would give it (path: or git+file:) */
  url: string;
  attrPath: string[];
}

/** Nix's own test for a path-like reference (anything that is not `scheme:...`), as `nix build .#x` parses it. */
const PATH_LIKE = /^(\.|\/|~)/;
const RELATIVE_PATH_SCHEME = /^path:(?!\/)/;

/**
 * Parses `REF#ATTR.PATH` the way nix-eval-jobs' `--flake` does, with
 * relative paths resolved against `cwd`. builtins.getFlake only takes
 * absolute references and treats a plain directory as `path:` (every file,
 * untracked ones too), whereas the nix CLI makes a directory inside a git
 * repository `git+file:` (tracked files only): a local path is turned into
 * what the CLI would use here, so `nixfarm build --flake .#x` sees what
 * `nix build .#x` sees. Other references (github:, git+https:, ...) go to
 * Nix as given.
 */
export function parseFlakeReference(ref: string, cwd: string | undefined): FlakeReference {
  const hash = ref.indexOf('#');
  if (hash < 0 || hash === ref.length - 1) {
    throw new ValidationError(
      `flake reference ${JSON.stringify(ref)} names no attribute: add the jobset's attribute after #, e.g. ${JSON.stringify(`${ref.replace(/#$/, '')}#hydraJobs`)} or ${JSON.stringify(`${ref.replace(/#$/, '')}#checks.x86_64-linux`)} (as nix-eval-jobs --flake requires)`,
    );
  }
  const attrPath = parseAttrPath(percentDecoded(ref.slice(hash + 1), ref), ref);
  const base = ref.slice(0, hash);
  if (PATH_LIKE.test(base)) return { url: localFlakeUrl(base, cwd, ref), attrPath };
  if (RELATIVE_PATH_SCHEME.test(base)) {
    const [path, query] = splitQuery(base.slice('path:'.length));
    return { url: `path:${absolute(path, cwd, ref)}${query}`, attrPath };
  }
  return { url: base, attrPath };
}

/** The fragment is a URL's: %22 is a quote, as Nix reads it. */
function percentDecoded(fragment: string, ref: string): string {
  try {
    return decodeURIComponent(fragment);
  } catch {
    throw new ValidationError(`flake reference ${JSON.stringify(ref)}: the attribute after # has a bad %-escape (write %25 for a % sign)`);
  }
}

function splitQuery(text: string): [string, string] {
  const q = text.indexOf('?');
  return q < 0 ? [text, ''] : [text.slice(0, q), text.slice(q)];
}

function absolute(path: string, cwd: string | undefined, ref: string): string {
  if (isAbsolute(path)) return resolve(path);
  if (cwd === undefined) throw new ValidationError(`flake reference ${JSON.stringify(ref)} is relative: give cwd, or an absolute path`);
  return resolve(cwd, path);
}

/** A directory holding flake.nix: git+file: of its repository (with ?dir= below the top) when in one, else path:. */
function localFlakeUrl(base: string, cwd: string | undefined, ref: string): string {
  if (base.startsWith('~')) throw new ValidationError(`flake reference ${JSON.stringify(ref)}: ~ is not expanded on the coordinator; give an absolute path`);
  const [rawPath, query] = splitQuery(base);
  const dir = absolute(rawPath, cwd, ref);
  let isDirectory = false;
  try {
    isDirectory = statSync(dir).isDirectory();
  } catch {
    throw new ValidationError(`flake reference ${JSON.stringify(ref)}: ${dir} does not exist on the coordinator machine`);
  }
  if (!isDirectory) throw new ValidationError(`flake reference ${JSON.stringify(ref)}: ${dir} is not a directory (a flake is a directory holding flake.nix)`);
  if (!existsSync(join(dir, 'flake.nix'))) {
    throw new ValidationError(
      `flake reference ${JSON.stringify(ref)}: ${dir} holds no flake.nix (give the directory of the flake, e.g. .#hydraJobs run there)`,
    );
  }
  for (let top = dir; ; top = dirname(top)) {
    if (existsSync(join(top, '.git'))) {
      const sub = relative(top, dir);
      const params = new URLSearchParams(query.slice(1));
      if (sub !== '') params.set('dir', sub);
      if (existsSync(join(top, '.git', 'shallow'))) params.set('shallow', '1');
      const search = params.toString();
      return `git+file://${top}${search === '' ? '' : `?${search}`}`;
    }
    if (dirname(top) === top) return `path:${dir}${query}`;
  }
}

/** Nix's attribute-path syntax after `#`: names split at dots, a "quoted" name kept whole. */
function parseAttrPath(text: string, ref: string): string[] {
  const names: string[] = [];
  let current = '';
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    else if (ch === '.' && !quoted) {
      names.push(current);
      current = '';
    } else current += ch;
  }
  names.push(current);
  if (quoted || names.some((n) => n === '')) throw new ValidationError(`flake reference ${JSON.stringify(ref)}: the attribute path after # is not well formed`);
  return names;
}
