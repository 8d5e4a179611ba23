import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import type { DerivationView, RecentFailure } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { runIdOf } from '../harness/build-timeline.js';
import { chain, cyclicOutputs, failingBranch, freshSalt, nixInstantiate, outputPathsOf, scriptedFixture } from '../harness/nix-fixtures.js';
import { sleep } from '../harness/poll.js';

function nameOf(drvPath: string): string {
  return drvPath.replace(/^\/nix\/store\/\w{32}-|\.drv$/g, '');
}

const execFileAsync = promisify(execFile);

/** What a flaky download serves once it works: the fixed output's content. */
const FETCHED = 'nixfarm flaky fetch\n';

/**
 * An HTTP server on loopback that refuses its first request (503) and serves
 * FETCHED after: a fixed-output derivation that downloads from it fails once
 * with a transient failure (Nix's verdict for a failed fixed-output builder,
 * which nixfarm retries as aborted) and then succeeds.
 */
async function flakyServer(): Promise<{ server: Server; port: number; requests: () => number }> {
  let requests = 0;
  const server = createServer((_request, response) => {
    requests++;
    if (requests === 1) response.writeHead(503).end('try again\n');
    else response.writeHead(200, { 'content-type': 'text/plain' }).end(FETCHED);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, requests: () => requests };
}

/**
 * `fetch`: a fixed-output download from the flaky server on `port`, named by
 * the salt (a fixed output's path depends on its name and hash only).
 */
function flakyFetchFixture(port: number): string {
  const sha256 = createHash('sha256').update(FETCHED).digest('hex');
  return scriptedFixture(
    'flaky-fetch',
    `  fetch = derivation { name = "flaky-fetch-" + salt; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; args = [ "-c" "\${bb}/bin/busybox wget -q -O $out http://127.0.0.1:${port}/payload" ]; outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "${sha256}"; };
`,
  );
}

/**
 * `colourful` fails after printing an error in colours, as compilers do on a
 * terminal (`\\\\033` here is `\\033` in the .nix file, `\033` for printf).
 */
function colourfulFixture(): string {
  return scriptedFixture(
    'colours',
    `  colourful = mk "colourful" ("echo 'colourful: about to fail " + salt + "'; printf '\\\\033[31;1merror:\\\\033[0m broke on purpose\\\\n' >&2; exit 3");
`,
  );
}

/** Progress lines of `nixfarm build` (they start with the run's counts), with the counts parsed. */
function progressLines(stderr: string): Array<{ line: string; done: number; total: number; running: number }> {
  return stderr
    .split('\n')
    .map((line) => ({ line, m: /^\[(\d+)\/(\d+) done, (\d+) running/.exec(line) }))
    .filter((p): p is { line: string; m: RegExpExecArray } => p.m !== null)
    .map(({ line, m }) => ({ line, done: Number(m[1]), total: Number(m[2]), running: Number(m[3]) }));
}

// Bad input (evaluation errors, malformed API bodies, unauthorised workers) is in bad-input.test.ts, thrown at a farm while a run builds.
describe('failures', () => {
  const farm = farmForSuite({ workers: [{ name: 'gamma', maxJobs: 2 }] });

  it('fails the run with exit 1 when a builder fails; dependents are dependency-failed, an independent branch still builds', async () => {
    const fixture = failingBranch();
    const salt = freshSalt();
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', salt]);
    assert.equal(result.exitCode, 1, `${result.stderr}\n${farm.diagnostics()}`);
    assert.equal(result.stdout, '', 'no output paths for a failed run');
    // The report names the derivation, the worker, and the log tail.
    assert.match(result.stderr, new RegExp(`FAILED: /nix/store/\\w{32}-${fixture.names.failing}\\.drv on gamma`));
    for (const line of fixture.logLines) assert.ok(result.stderr.includes(line), `log tail shows ${JSON.stringify(line)}`);

    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runIdOf(result.stderr)}/derivations`);
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
    const cachedRows = (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runIdOf(again.stderr)}/derivations`)).derivations;
    assert.equal(cachedRows.find((d) => nameOf(d.drvPath) === fixture.names.failing)?.status, 'cached-failure');

    // --rebuild-failed really builds it again (and it fails again, on the worker).
    const rebuilt = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', salt, '--rebuild-failed']);
    assert.equal(rebuilt.exitCode, 1);
    assert.match(rebuilt.stderr, new RegExp(`building ${fixture.names.failing} on gamma`));
  });

  it('counts a retried derivation once: its aborted try leaves the running count, the retry enters it again', async () => {
    const flaky = await flakyServer();
    try {
      const file = flakyFetchFixture(flaky.port);
      const salt = freshSalt();
      const result = await farm.build([file, '-A', 'fetch', '--argstr', 'salt', salt], { timeoutMs: 120_000 });
      assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
      assert.equal(flaky.requests(), 2, 'one refused download, one that worked');
      const drv = (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runIdOf(result.stderr)}/derivations`)).derivations;
      assert.equal(drv.length, 1);
      const fetchDrv = drv[0]!.drvPath;
      const name = `flaky-fetch-${salt}`;
      assert.deepEqual(
        progressLines(result.stderr).map((p) => p.line),
        [
          `[0/1 done, 1 running] building ${name} on gamma`,
          `[0/1 done, 0 running] ${name} aborted on gamma (try 1 of 5): Nix could not build ${fetchDrv} (TransientFailure): builder for '${fetchDrv}' failed with exit code 1; retrying in 1 s`,
          `[0/1 done, 1 running] building ${name} on gamma`,
          `[1/1 done, 0 running] built ${name} on gamma`,
        ],
        result.stderr,
      );
      for (const p of progressLines(result.stderr)) assert.ok(p.running <= p.total, `never more running than derivations: ${p.line}`);
      assert.equal(drv[0]!.status, 'succeeded');
    } finally {
      flaky.server.close();
    }
  });

  it('keeps terminal colours out of errors: the CLI, the API, the dashboard and nixfarm why show plain text', async () => {
    const file = colourfulFixture();
    const salt = freshSalt();
    const result = await farm.build([file, '-A', 'colourful', '--argstr', 'salt', salt], { timeoutMs: 120_000 });
    assert.equal(result.exitCode, 1, `${result.stderr}\n${farm.diagnostics()}`);
    const runId = runIdOf(result.stderr);
    const [row] = (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`)).derivations;
    const drvPath = row!.drvPath;
    // Nix 2.8 reports this error over the serve protocol as `\x1b[0mbuilder for '\x1b[35;1m/nix/store/...drv\x1b[0m' failed ...`.
    const error = `builder for '${drvPath}' failed with exit code 3`;
    assert.equal(row!.error, error);
    assert.deepEqual(row!.logTail, [`colourful: about to fail ${salt}`, 'error: broke on purpose']);
    assert.ok(
      result.stderr.includes(`FAILED: ${drvPath} on gamma: ${error}\n  last 2 log lines:\n  > colourful: about to fail ${salt}\n  > error: broke on purpose\n`),
      result.stderr,
    );
    assert.ok(!result.stderr.includes('\x1b'), `no escapes in the progress:\n${JSON.stringify(result.stderr)}`);

    const why = await farm.cli(['why', drvPath]);
    assert.equal(why.exitCode, 0, why.stderr);
    assert.ok(why.stdout.includes(`Error: ${error}\n`), why.stdout);
    assert.ok(!why.stdout.includes('\x1b'), JSON.stringify(why.stdout));
    const dashboard = await farm.api<{ failures: RecentFailure[] }>('/api/dashboard');
    assert.equal(dashboard.failures.find((f) => f.drvPath === drvPath)?.error, error);

    // The log is stored as the serve session sent it (Nix already filtered the builder's colours there, as for any
    // non-terminal): nixfarm leaves it alone, and nix-store --read-log on the coordinator reads the same.
    const log = await farm.cli(['log', drvPath]);
    assert.equal(log.exitCode, 0, log.stderr);
    assert.equal(log.stdout, `colourful: about to fail ${salt}\nerror: broke on purpose\n`);
    const { stdout: viaNix } = await execFileAsync('nix-store', ['--read-log', drvPath], { env: { ...process.env, NIX_LOG_DIR: farm.nixLogDir } });
    assert.equal(viaNix, log.stdout);
  });

  it("fails a derivation whose outputs refer to each other in a cycle at once (Nix's multiple-outputs.nix cyclic): one try, Nix's words, no retries", async () => {
    const fixture = cyclicOutputs();
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    assert.equal(result.exitCode, 1, `${result.stderr}\n${farm.diagnostics()}`);
    assert.match(result.stderr, new RegExp(`FAILED: /nix/store/\\w{32}-${fixture.name}\\.drv on gamma: error: cycle detected in build of`));
    assert.doesNotMatch(result.stderr, /ABORTED|gave up after/);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runIdOf(result.stderr)}/derivations`);
    assert.deepEqual(
      derivations.map((d) => [nameOf(d.drvPath), d.status, d.attempts, d.worker]),
      [[fixture.name, 'failed', 1, 'gamma']],
    );
    const error = derivations[0]!.error ?? '';
    assert.match(
      error,
      new RegExp(`^error: cycle detected in build of '/nix/store/\\w{32}-${fixture.name}\\.drv' in the references of output '[abc]' from output '[abc]'$`),
    );
    assert.doesNotMatch(error, /\x1b/, 'without terminal colours');
  });

  it('ends a build that runs past --timeout as timed-out', async () => {
    const fixture = chain(1, { sleepSeconds: 30 });
    const started = Date.now();
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt(), '--timeout', '2']);
    assert.equal(result.exitCode, 1, result.stderr);
    assert.match(result.stderr, /TIMED-OUT: \/nix\/store\/\w{32}-link-0\.drv on gamma/);
    assert.ok(Date.now() - started < 25_000, 'the worker stopped the build, it did not run its 30 s');
  });

  it("keeps GC roots for results of a succeeded run and drops the run's temporary roots", async () => {
    const fixture = chain(3);
    const result = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    assert.equal(result.exitCode, 0, result.stderr);
    const runId = runIdOf(result.stderr);
    assert.ok(!existsSync(join(farm.gcRootsDir, 'runs', runId)), 'run roots removed when the run ended');
    const resultDir = join(farm.gcRootsDir, 'results', runId);
    const links = readdirSync(resultDir).map((l) => readlinkSync(join(resultDir, l)));
    assert.deepEqual(links, [result.stdout.trim()]);
  });

  it("takes --expr, --arg and -I like nix-build, resolving relative paths in the caller's directory", async () => {
    const fixture = chain(2);
    const dir = dirname(fixture.file);
    const salt = freshSalt();
    const viaExpr = await farm.build(['--expr', `(import ./${basename(fixture.file)} { salt = "${salt}"; }).all`], { cwd: dir });
    assert.equal(viaExpr.exitCode, 0, viaExpr.stderr);
    const viaArg = await farm.build([basename(fixture.file), '-A', 'all', '--arg', 'salt', `"${salt}"`], { cwd: dir });
    assert.equal(viaArg.exitCode, 0, viaArg.stderr);
    assert.equal(viaArg.stdout, viaExpr.stdout, 'the same derivation either way');
    assert.match(viaArg.stderr, /0 derivations to build/, 'already built by the first');
    const viaInclude = await farm.build(['-I', 'fixtures=.', '--expr', `(import <fixtures/${basename(fixture.file)}> { salt = "${salt}"; }).all`], {
      cwd: dir,
    });
    assert.equal(viaInclude.exitCode, 0, viaInclude.stderr);
    assert.equal(viaInclude.stdout, viaExpr.stdout);
  });

  it('says at once when no worker can build a derivation, and builds it when a capable worker registers', async () => {
    const fixture = chain(2, { system: 'riscv64-linux' });
    const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    const deadline = Date.now() + 10_000;
    while (!build.stderrSoFar().includes('UNSUPPORTED') && Date.now() < deadline) await sleep(100);
    const notice = build.stderrSoFar();
    assert.match(notice, /UNSUPPORTED: no worker can build \/nix\/store\/\w{32}-link-0\.drv \(system riscv64-linux, no features\)/);
    assert.match(notice, /gamma: wrong system: needs riscv64-linux, worker has x86_64-linux/);
    const runId = runIdOf(notice);
    const shown = (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`)).derivations;
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
