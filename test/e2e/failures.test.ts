import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TestFarm } from '../harness/test-farm.js';
import { runIdOf } from '../harness/build-timeline.js';
import { chain, cyclicOutputs, failingBranch, freshSalt, nixInstantiate, outputPathsOf } from '../harness/nix-fixtures.js';

interface DerivationRow {
  drvPath: string;
  status: string;
  worker?: string;
  attempts?: number;
  error?: string;
  logTail?: string[];
}

function nameOf(drvPath: string): string {
  return drvPath.replace(/^\/nix\/store\/\w{32}-|\.drv$/g, '');
}


// Bad input (evaluation errors, malformed API bodies, unauthorised workers) is in bad-input.test.ts, thrown at a farm while a run builds.
describe('failures', () => {
  let farm: TestFarm;

  before(async () => {
    farm = await TestFarm.start({ workers: [{ name: 'gamma', maxJobs: 2 }] });
  });

  after(async () => {
    await farm?.stop();
  });

  it('fails the run with exit 1 when a builder fails; dependents are dependency-failed, an independent branch still builds', async () => {
    const fixture = failingBranch();
    const salt = freshSalt();
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', salt]);
    assert.equal(result.exitCode, 1, `${result.stderr}\n${farm.diagnostics()}`);
    assert.equal(result.stdout, '', 'no output paths for a failed run');
    // The report names the derivation, the worker, and the log tail.
    assert.match(result.stderr, new RegExp(`FAILED: /nix/store/\\w{32}-${fixture.names.failing}\\.drv on gamma`));
    for (const line of fixture.logLines) assert.ok(result.stderr.includes(line), `log tail shows ${JSON.stringify(line)}`);

    const { derivations } = await farm.api<{ derivations: DerivationRow[] }>(`/api/runs/${runIdOf(result.stderr)}/derivations`);
    const byName = new Map(derivations.map((d) => [nameOf(d.drvPath), d]));
    assert.equal(byName.get(fixture.names.failing)?.status, 'failed');
    assert.equal(byName.get(fixture.names.dependent)?.status, 'dependency-failed');
    assert.equal(byName.get(fixture.names.dependent)?.worker, undefined, 'a dependency-failed derivation is never built');
    assert.equal(byName.get(fixture.names.all)?.status, 'dependency-failed');
    assert.equal(byName.get(fixture.names.independent)?.status, 'succeeded');
    const [independentDrv] = await nixInstantiate(fixture.file, ['independent'], { salt });
    const outputs = await outputPathsOf(independentDrv!);
    assert.equal(spawnSync('nix-store', ['--check-validity', ...outputs]).status, 0, 'the independent branch is valid on the coordinator');
    const run = await farm.api<{ status: string }>(`/api/runs/${runIdOf(result.stderr)}`);
    assert.equal(run.status, 'failed');

    // Submitted again: the failure is reported at once from the cache, nothing is rebuilt.
    const again = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', salt]);
    assert.equal(again.exitCode, 1, again.stderr);
    assert.match(again.stderr, new RegExp(`CACHED-FAILURE: /nix/store/\\w{32}-${fixture.names.failing}\\.drv.*--rebuild-failed`));
    assert.doesNotMatch(again.stderr, /\] building \S+ on /, 'nothing was built');
    const cachedRows = (await farm.api<{ derivations: DerivationRow[] }>(`/api/runs/${runIdOf(again.stderr)}/derivations`)).derivations;
    assert.equal(cachedRows.find((d) => nameOf(d.drvPath) === fixture.names.failing)?.status, 'cached-failure');

    // --rebuild-failed really builds it again (and it fails again, on the worker).
    const rebuilt = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', salt, '--rebuild-failed']);
    assert.equal(rebuilt.exitCode, 1);
    assert.match(rebuilt.stderr, new RegExp(`building ${fixture.names.failing} on gamma`));
  });

  it("fails a derivation whose outputs refer to each other in a cycle at once (Nix's multiple-outputs.nix cyclic): one try, Nix's words, no retries", async () => {
    const fixture = cyclicOutputs();
    const started = Date.now();
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    const took = Date.now() - started;
    assert.equal(result.exitCode, 1, `${result.stderr}\n${farm.diagnostics()}`);
    assert.match(result.stderr, new RegExp(`FAILED: /nix/store/\\w{32}-${fixture.name}\\.drv on gamma: error: cycle detected in build of`));
    assert.doesNotMatch(result.stderr, /ABORTED|gave up after/);
    const { derivations } = await farm.api<{ derivations: DerivationRow[] }>(`/api/runs/${runIdOf(result.stderr)}/derivations`);
    assert.deepEqual(
      derivations.map((d) => [nameOf(d.drvPath), d.status, d.attempts, d.worker]),
      [[fixture.name, 'failed', 1, 'gamma']],
    );
    const error = derivations[0]!.error ?? '';
    assert.match(error, new RegExp(`^error: cycle detected in build of '/nix/store/\\w{32}-${fixture.name}\\.drv' in the references of output '[abc]' from output '[abc]'$`));
    assert.doesNotMatch(error, /\x1b/, 'without terminal colours');
    // Five tries with back-off (1+2+4+8 s) took over 15 s; one try takes a few.
    assert.ok(took < 12_000, `took ${took} ms`);
  });

  it('ends a build that runs past --timeout as timed-out', async () => {
    const fixture = chain(1, { sleepSeconds: 30 });
    const started = Date.now();
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt(), '--timeout', '2']);
    assert.equal(result.exitCode, 1, result.stderr);
    assert.match(result.stderr, /TIMED-OUT: \/nix\/store\/\w{32}-link-0\.drv on gamma/);
    assert.ok(Date.now() - started < 25_000, 'the worker stopped the build, it did not run its 30 s');
  });

  it('keeps GC roots for results of a succeeded run and drops the run\'s temporary roots', async () => {
    const fixture = chain(3);
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    assert.equal(result.exitCode, 0, result.stderr);
    const runId = runIdOf(result.stderr);
    assert.ok(!existsSync(join(farm.gcRootsDir, 'runs', runId)), 'run roots removed when the run ended');
    const resultDir = join(farm.gcRootsDir, 'results', runId);
    const links = readdirSync(resultDir).map((l) => readlinkSync(join(resultDir, l)));
    assert.deepEqual(links, [result.stdout.trim()]);
  });

  it('takes --expr, --arg and -I like nix-build, resolving relative paths in the caller\'s directory', async () => {
    const fixture = chain(2);
    const dir = dirname(fixture.file);
    const salt = freshSalt();
    const viaExpr = await farm.build(['--expr', `(import ./${basename(fixture.file)} { salt = "${salt}"; }).all`], { cwd: dir });
    assert.equal(viaExpr.exitCode, 0, viaExpr.stderr);
    const viaArg = await farm.build([basename(fixture.file), '-A', 'all', '--arg', 'salt', `"${salt}"`], { cwd: dir });
    assert.equal(viaArg.exitCode, 0, viaArg.stderr);
    assert.equal(viaArg.stdout, viaExpr.stdout, 'the same derivation either way');
    assert.match(viaArg.stderr, /0 derivations to build/, 'already built by the first');
    const viaInclude = await farm.build(['-I', 'fixtures=.', '--expr', `(import <fixtures/${basename(fixture.file)}> { salt = "${salt}"; }).all`], { cwd: dir });
    assert.equal(viaInclude.exitCode, 0, viaInclude.stderr);
    assert.equal(viaInclude.stdout, viaExpr.stdout);
  });

  it('says at once when no worker can build a derivation, and builds it when a capable worker registers', async () => {
    const fixture = chain(2, { system: 'riscv64-linux' });
    const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    const deadline = Date.now() + 10_000;
    while (!build.stderrSoFar().includes('UNSUPPORTED') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const notice = build.stderrSoFar();
    assert.match(notice, /UNSUPPORTED: no worker can build \/nix\/store\/\w{32}-link-0\.drv \(system riscv64-linux, no features\)/);
    assert.match(notice, /gamma: wrong system: needs riscv64-linux, worker has x86_64-linux/);
    const runId = runIdOf(notice);
    const shown = (await farm.api<{ derivations: DerivationRow[] }>(`/api/runs/${runId}/derivations`)).derivations;
    const link0 = shown.find((d) => nameOf(d.drvPath) === 'link-0');
    assert.equal(link0?.status, 'unsupported', 'the run shows it as unsupported');
    assert.match(link0?.error ?? '', /system riscv64-linux.*gamma: wrong system/);
    // A capable worker arrives: the queued build proceeds on it.
    await farm.startWorker({ name: 'riscy', systems: ['riscv64-linux'], nixConfig: ['extra-platforms = riscv64-linux'] });
    const result = await build.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    assert.match(result.stderr, /built link-1 on riscy/);
    await farm.stopWorker('riscy');
  });
});
