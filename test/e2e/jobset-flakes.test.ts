import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { JobsetAttribute } from '@nixfarm/shared';
import { commitToGit, flakeFixture } from '../harness/flake-fixture.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { outputsOf } from '../harness/nix-fixtures.js';

/**
 * Jobsets from flakes (`--flake REF#ATTR`, as nix-eval-jobs takes them),
 * through Nix's experimental flakes feature enabled per call: a relative
 * reference resolves against the caller's directory, `path:` references and
 * git repositories (tracked files only, as `nix build` sees them) work, and
 * a bad reference or a missing attribute is refused with exit 2, Nix's
 * message and a hint.
 */

const FLAKE_OUTPUTS = `      checks.x86_64-linux = {
        a = mk "flake-a" "echo a > $out";
        b = mk "flake-b" "echo b > $out";
        fails = mk "flake-fails" "echo going to fail; exit 3";
      };
      hydraJobs = {
        c = mk "flake-c" "echo c > $out";
        nested = { recurseForDerivations = true; d = mk "flake-d" "echo d > $out"; };
        broken = throw "flake-throw-message";
      };
`;

function lines(stdout: string): Map<string, JobsetAttribute> {
  const parsed = stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as JobsetAttribute);
  return new Map(parsed.map((l) => [l.attr, l]));
}

describe('jobsets from flakes', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'alpha', maxJobs: 2 },
      { name: 'beta', maxJobs: 2 },
    ],
  });
  const flake = flakeFixture('flake', FLAKE_OUTPUTS);

  it('builds .#checks.x86_64-linux from the flake directory, each attribute with its result', async () => {
    const result = await farm.build(['--jobset', '--flake', '.#checks.x86_64-linux', '--json'], { cwd: flake.dir });
    assert.equal(result.exitCode, 1, `one check fails:\n${result.stderr}\n${farm.diagnostics()}`);
    const byAttr = lines(result.stdout);
    assert.deepEqual([...byAttr.keys()].sort(), ['a', 'b', 'fails']);
    for (const attr of ['a', 'b']) {
      const got = byAttr.get(attr)!;
      assert.equal(got.buildStatus, 'succeeded', attr);
      assert.equal(got.name, `flake-${attr}`);
      assert.deepEqual(got.attrPath, [attr]);
      assert.deepEqual(got.outputs, await outputsOf(got.drvPath!));
    }
    assert.equal(byAttr.get('fails')!.buildStatus, 'failed');
    assert.equal(byAttr.get('fails')!.failedDrv, byAttr.get('fails')!.drvPath);
    assert.match(result.stderr, /2 of 3 attributes built, 0 failed to evaluate/);
  });

  it('builds path:/abs#hydraJobs: recursion as nix-eval-jobs does it, and an evaluation error with Nix message', async () => {
    const result = await farm.build(['--jobset', '--flake', `path:${flake.dir}#hydraJobs`, '--json']);
    assert.equal(result.exitCode, 1, `one attribute throws:\n${result.stderr}\n${farm.diagnostics()}`);
    const byAttr = lines(result.stdout);
    assert.deepEqual([...byAttr.keys()].sort(), ['broken', 'c', 'nested.d']);
    assert.equal(byAttr.get('c')!.buildStatus, 'succeeded');
    assert.equal(byAttr.get('nested.d')!.buildStatus, 'succeeded');
    assert.deepEqual(byAttr.get('nested.d')!.attrPath, ['nested', 'd']);
    const broken = byAttr.get('broken')!;
    assert.equal(broken.buildStatus, 'evaluation-failed');
    assert.match(broken.error ?? '', /flake-throw-message/);
    // The same flake as a plain directory path: the same derivations (the flake's source is the same).
    const again = await farm.build(['--jobset', '--flake', `${flake.dir}#hydraJobs`, '--json', '--eval-only']);
    assert.equal(again.exitCode, 1, again.stderr);
    const evaluated = lines(again.stdout);
    assert.equal(evaluated.get('c')!.drvPath, byAttr.get('c')!.drvPath);
    assert.equal(evaluated.get('c')!.isCached, true);
  });

  it('sees only tracked files of a flake in a git repository, as nix build does', async () => {
    const repo = flakeFixture(
      'flake-git',
      `      hydraJobs.seen = mk (if builtins.pathExists ./untracked.txt then "saw-untracked" else "tracked-only") "echo > $out";\n`,
    );
    writeFileSync(join(repo.dir, 'untracked.txt'), 'not committed\n');
    commitToGit(repo.dir, ['flake.nix', 'busybox']);
    const result = await farm.build(['--jobset', '--flake', '.#hydraJobs', '--json', '--eval-only'], { cwd: repo.dir });
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(lines(result.stdout).get('seen')!.name, 'tracked-only');
  });

  it('refuses a bad flake reference, a missing attribute, a reference without attribute and --argstr: exit 2 with Nix message and a hint', async () => {
    const missing = await farm.build(['--jobset', '--flake', `path:${flake.dir}#nope.x86_64-linux`]);
    assert.equal(missing.exitCode, 2, missing.stderr);
    assert.match(missing.stderr, /evaluation failed:[\s\S]*attribute 'nope' missing[\s\S]*hint: check the flake reference/);

    const nowhere = await farm.build(['--jobset', '--flake', `${join(flake.dir, 'no-such-dir')}#hydraJobs`]);
    assert.equal(nowhere.exitCode, 2, nowhere.stderr);
    assert.match(nowhere.stderr, /no-such-dir does not exist on the coordinator machine/);

    const unfetchable = await farm.build(['--jobset', '--flake', `path:${join(flake.dir, 'no-such-dir')}#hydraJobs`]);
    assert.equal(unfetchable.exitCode, 2, unfetchable.stderr);
    assert.match(unfetchable.stderr, /evaluation failed:[\s\S]*no-such-dir[\s\S]*hint: check the flake reference/);

    const bare = await farm.build(['--jobset', '--flake', '.'], { cwd: flake.dir });
    assert.equal(bare.exitCode, 2, bare.stderr);
    assert.match(bare.stderr, /names no attribute: add the jobset's attribute after #, e.g. "\.#hydraJobs"/);

    const withArgs = await farm.build(['--jobset', '--flake', '.#hydraJobs', '--argstr', 'salt', 'x'], { cwd: flake.dir });
    assert.equal(withArgs.exitCode, 2, withArgs.stderr);
    assert.match(withArgs.stderr, /--arg and --argstr do not apply to --flake/);
  });
});
