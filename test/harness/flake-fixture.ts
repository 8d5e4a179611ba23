import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freshSalt, writeBusyboxDir } from './nix-fixtures.js';
import { onProcessExit, removeTreeSync } from './process-cleanup.js';

/**
 * A flake without inputs in a fresh temp dir (removed at exit): flake.nix
 * whose `outputs = { self }: { ... }` has a `mk = name: script:` helper
 * running the script under the busybox folder beside it (no nixpkgs), and
 * the given outputs' body. A flake takes no arguments, so the salt that makes
 * its derivations new to every store is written into the file.
 */
export interface FlakeFixture {
  dir: string;
  salt: string;
}

export function flakeFixture(kind: string, outputs: string): FlakeFixture {
  const dir = mkdtempSync(join(tmpdir(), `nixfarm-${kind}-`));
  onProcessExit(() => removeTreeSync(dir));
  writeBusyboxDir(dir);
  const salt = freshSalt();
  writeFileSync(
    join(dir, 'flake.nix'),
    `{
  outputs = { self }:
    let
      salt = "${salt}";
      bb = builtins.path { path = ./busybox; name = "busybox"; };
      mk = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; args = [ "-c" ("echo \${salt}; " + script) ]; };
    in {
${outputs}    };
}
`,
  );
  return { dir, salt };
}

/** Makes the flake's directory a git repository with these files committed (the rest stays untracked). */
export function commitToGit(dir: string, files: readonly string[]): void {
  const git = (args: string[]) => execFileSync('git', ['-c', 'user.name=nixfarm', '-c', 'user.email=nixfarm@localhost', ...args], { cwd: dir, stdio: 'pipe' });
  git(['init', '--quiet', '.']);
  git(['add', ...files]);
  git(['commit', '--quiet', '-m', 'flake']);
}
