import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { before, describe, it } from 'node:test';
import { hashPart } from '@nixfarm/shared';
import type { TestFarm } from '../harness/test-farm.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { freshSalt, nixInstantiate, outputPathsOf, scriptedFixture } from '../harness/nix-fixtures.js';
import { pollFor } from '../harness/poll.js';

const run = promisify(execFile);

/**
 * Derivations that print known lines: `chatty` at once (stdout and stderr),
 * `slow` with pauses (for following it live), `killable` one line, a long
 * pause, then another (a worker is killed in the pause), `failing` a line
 * and exit 3; `silent` and `silentFailing` print nothing (the latter exits 1,
 * so `afterSilentFailing` is never built). Every script carries the salt, so
 * no store has seen it before.
 */
function logFixture(): string {
  return scriptedFixture(
    'logs',
    `  chatty = mk "chatty" ("echo chatty salt " + salt + "; echo 'chatty: line one'; echo 'chatty: on stderr' >&2; echo 'chatty: line three'; echo ok > $out");
  slow = mk "slow" ("echo 'slow: begun " + salt + "'; " + sleep 6 + "echo 'slow: middle'; " + sleep 3 + "echo 'slow: finished'; echo ok > $out");
  killable = mk "killable" ("echo 'killable: part one " + salt + "'; " + sleep 10 + "echo 'killable: part two'; echo ok > $out");
  failing = mk "failing" ("echo 'failing: about to fail " + salt + "'; exit 3");
  silent = mk "silent" (": " + salt + "; \${bb}/bin/busybox touch $out");
  inherit silentFailing;
  afterSilentFailing = mk "after-silent-failing" ("echo \${silentFailing} > $out");
  local = derivation { name = "local"; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; preferLocalBuild = true; args = [ "-c" ("echo 'local: built on the coordinator " + salt + "'; echo ok > $out") ]; };
`,
    `  sleep = s: "\${bb}/bin/busybox sleep " + toString s + "; ";
  silentFailing = mk "silent-failing" (": " + salt + "; exit 1");
`,
  );
}

async function readLogWithNix(farm: TestFarm, drvPath: string): Promise<string> {
  const { stdout } = await run('nix-store', ['--read-log', drvPath], { env: { ...process.env, NIX_LOG_DIR: farm.nixLogDir } });
  return stdout;
}

/** Where Nix's layout puts a derivation's log: drvs/<first 2 chars of the basename>/<the rest>. */
function nixLayoutPath(farm: TestFarm, drvPath: string): string {
  const base = drvPath.slice('/nix/store/'.length);
  return join(farm.nixLogDir, 'drvs', base.slice(0, 2), base.slice(2));
}

describe('build logs', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'w1', lockSeconds: 3 },
      { name: 'w2', lockSeconds: 3 },
    ],
  });
  let file: string;

  before(async () => {
    file = logFixture();
  });

  it("stores a finished build's log where nix-store --read-log finds it, and nixfarm log shows it by drv, output, hash prefix and run attribute", async () => {
    const salt = freshSalt();
    const [drvPath] = await nixInstantiate(file, ['chatty'], { salt });
    const [outPath] = await outputPathsOf(drvPath!);
    const built = await farm.build([file, '-A', 'chatty', '--argstr', 'salt', salt, '--json'], { timeoutMs: 120_000 });
    assert.equal(built.exitCode, 0, built.stderr + farm.diagnostics());
    const runId = (JSON.parse(built.stdout) as { id: string }).id;
    const expected = [`chatty salt ${salt}`, 'chatty: line one', 'chatty: on stderr', 'chatty: line three'];

    const byDrv = await farm.cli(['log', drvPath!]);
    assert.equal(byDrv.exitCode, 0, byDrv.stderr);
    for (const line of expected) assert.ok(byDrv.stdout.split('\n').includes(line), `${line} in the log:\n${byDrv.stdout}`);
    assert.ok(byDrv.stdout.indexOf('chatty: line one') < byDrv.stdout.indexOf('chatty: line three'), 'lines in the order written');
    assert.doesNotMatch(byDrv.stdout, /log incomplete/);
    for (const target of [outPath!, hashPart(drvPath!).slice(0, 10)]) {
      const other = await farm.cli(['log', target]);
      assert.equal(other.exitCode, 0, other.stderr);
      assert.equal(other.stdout, byDrv.stdout, `the same log by ${target}`);
    }
    const byAttr = await farm.cli(['log', runId, 'chatty']);
    assert.equal(byAttr.exitCode, 0, byAttr.stderr);
    assert.equal(byAttr.stdout, byDrv.stdout);
    const byRunAlone = await farm.cli(['log', runId]);
    assert.equal(byRunAlone.exitCode, 0, byRunAlone.stderr);
    assert.equal(byRunAlone.stdout, byDrv.stdout, 'a run with one derivation needs no attribute');

    // On the coordinator's disk in Nix's layout, as Nix itself reads it.
    const stored = nixLayoutPath(farm, drvPath!);
    assert.ok(existsSync(stored), `log file at ${stored}`);
    assert.equal(readFileSync(stored, 'utf8'), byDrv.stdout);
    const viaNix = await readLogWithNix(farm, drvPath!);
    for (const line of expected) assert.ok(viaNix.includes(line), `nix-store --read-log shows ${line}:\n${viaNix}`);

    const info = await farm.cli(['log', drvPath!, '--json']);
    assert.equal(info.exitCode, 0, info.stderr);
    const meta = JSON.parse(info.stdout) as {
      status: string;
      complete: boolean;
      live: boolean;
      file: string;
      attempts: Array<{ worker: string; end: string }>;
    };
    assert.equal(meta.status, 'succeeded');
    assert.equal(meta.complete, true);
    assert.equal(meta.live, false);
    assert.equal(meta.file, stored);
    assert.equal(meta.attempts.length, 1);
    assert.equal(meta.attempts[0]!.end, 'succeeded');
  });

  it('refuses unknown derivations and runs with exit 2', async () => {
    const unknown = await farm.cli(['log', `/nix/store/${'a'.repeat(32)}-nothing.drv`]);
    assert.equal(unknown.exitCode, 2);
    assert.match(unknown.stderr, /no derivation known/);
    const badPath = await farm.cli(['log', '/nix/store/short-x.drv']);
    assert.equal(badPath.exitCode, 2);
    assert.match(badPath.stderr, /not a valid Nix store path/);
    const noRun = await farm.cli(['log', 'zzzzzzzzzzzz', 'x']);
    assert.equal(noRun.exitCode, 2);
    assert.match(noRun.stderr, /no run with id/);
  });

  it('stores the log of a failing build', async () => {
    const salt = freshSalt();
    const [drvPath] = await nixInstantiate(file, ['failing'], { salt });
    const built = await farm.build([file, '-A', 'failing', '--argstr', 'salt', salt], { timeoutMs: 120_000 });
    assert.equal(built.exitCode, 1, built.stderr);
    const shown = await farm.cli(['log', drvPath!]);
    assert.equal(shown.exitCode, 0, shown.stderr);
    assert.ok(shown.stdout.includes(`failing: about to fail ${salt}`), shown.stdout);
    assert.ok((await readLogWithNix(farm, drvPath!)).includes(`failing: about to fail ${salt}`));
    const meta = JSON.parse((await farm.cli(['log', drvPath!, '--json'])).stdout) as { status: string; attempts: Array<{ end: string }> };
    assert.equal(meta.status, 'failed');
    assert.equal(meta.attempts[0]?.end, 'failed');
  });

  it('stores an empty log for a build that printed nothing, succeeded or failed, as Nix does; a derivation never built has none', async () => {
    const salt = freshSalt();
    const [silent, silentFailing, never] = await nixInstantiate(file, ['silent', 'silentFailing', 'afterSilentFailing'], { salt });
    const built = await farm.build([file, '-A', 'silent', '-A', 'afterSilentFailing', '--argstr', 'salt', salt], { timeoutMs: 120_000 });
    assert.equal(built.exitCode, 1, built.stderr + farm.diagnostics());
    assert.match(built.stderr, /built silent on w\d/);
    assert.match(built.stderr, /FAILED: \/nix\/store\/\w{32}-silent-failing\.drv on w\d/);

    for (const drvPath of [silent!, silentFailing!]) {
      // Nix itself: the log exists and is empty (exit 0, nothing printed), not "not available".
      const viaNix = spawnSync('nix-store', ['--read-log', drvPath], { env: { ...process.env, NIX_LOG_DIR: farm.nixLogDir }, encoding: 'utf8' });
      assert.equal(viaNix.status, 0, `nix-store --read-log ${drvPath}: ${viaNix.stderr}`);
      assert.equal(viaNix.stdout, '');
      assert.equal(readFileSync(nixLayoutPath(farm, drvPath), 'utf8'), '');
      const shown = await farm.cli(['log', drvPath]);
      assert.equal(shown.exitCode, 0, shown.stderr);
      assert.equal(shown.stdout, '');
      assert.equal(shown.stderr, `nixfarm log: the build of ${drvPath} printed nothing (empty log)\n`);
      const response = await fetch(new URL(`/api/logs?path=${drvPath}`, farm.address.httpUrl), { headers: farm.authHeaders('read') });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-nixfarm-log-live'), 'false');
      assert.equal(await response.text(), '');
      const meta = JSON.parse((await farm.cli(['log', drvPath, '--json'])).stdout) as { source: string; complete: boolean; file?: string };
      assert.deepEqual([meta.source, meta.complete, meta.file], ['file', true, nixLayoutPath(farm, drvPath)]);
    }

    // Never built (its input failed): no log, which is not an empty one: 404 from the API, exit 2 from the CLI, as Nix refuses it too.
    const none = await fetch(new URL(`/api/logs?path=${never}`, farm.address.httpUrl), { headers: farm.authHeaders('read') });
    assert.equal(none.status, 404);
    assert.deepEqual(await none.json(), { error: { code: 'log-not-found', message: `no build log of ${never} is stored (status dependency-failed)` } });
    const refused = await farm.cli(['log', never!]);
    assert.equal(refused.exitCode, 2);
    assert.equal(refused.stdout, '');
    assert.equal(refused.stderr, `nixfarm: no build log of ${never} is stored (status dependency-failed)\n`);
    const byPrefix = await farm.cli(['log', hashPart(never!).slice(0, 12)]);
    assert.equal(byPrefix.stderr, refused.stderr, 'a hash prefix that names the derivation is not retried as a run id');
    assert.equal(spawnSync('nix-store', ['--read-log', never!], { env: { ...process.env, NIX_LOG_DIR: farm.nixLogDir } }).status, 1);
  });

  it('stores the log of a build on the coordinator itself (preferLocalBuild)', async () => {
    const salt = freshSalt();
    const [drvPath] = await nixInstantiate(file, ['local'], { salt });
    const built = await farm.build([file, '-A', 'local', '--argstr', 'salt', salt], { timeoutMs: 120_000 });
    assert.equal(built.exitCode, 0, built.stderr);
    const meta = JSON.parse((await farm.cli(['log', drvPath!, '--json'])).stdout) as { attempts: Array<{ worker: string; end: string }> };
    assert.deepEqual(
      meta.attempts.map((a) => [a.worker, a.end]),
      [['coordinator', 'succeeded']],
    );
    const shown = await farm.cli(['log', drvPath!]);
    assert.ok(shown.stdout.includes(`local: built on the coordinator ${salt}`), shown.stdout);
    assert.ok((await readLogWithNix(farm, drvPath!)).includes(`local: built on the coordinator ${salt}`));
  });

  it('follows a running build live with -f and exits when it ends', async () => {
    const salt = freshSalt();
    const [drvPath] = await nixInstantiate(file, ['slow'], { salt });
    const build = farm.build([file, '-A', 'slow', '--argstr', 'salt', salt], { timeoutMs: 120_000 });
    // Started while queued or running: it waits for the build, then follows it.
    await pollFor(
      async () => (await farm.cli(['log', drvPath!, '--json'])).exitCode === 0,
      30_000,
      () => 'the derivation to be known',
    );
    const follower = farm.spawnCli(['log', '-f', drvPath!], { timeoutMs: 120_000 });
    let exited = false;
    void follower.result.then(() => (exited = true));
    await pollFor(
      () => follower.stdoutSoFar().includes(`slow: begun ${salt}`),
      60_000,
      () => `the first line in the follower's output: ${follower.stdoutSoFar()}`,
    );
    const firstSeenAt = Date.now();
    assert.equal(exited, false, 'the first line arrived while the follower still ran');
    assert.ok(!follower.stdoutSoFar().includes('slow: finished'), `the first line was seen before the build wrote its last: ${follower.stdoutSoFar()}`);
    const result = await follower.result;
    const endedAt = Date.now();
    const stdout = result.stdout;
    assert.equal(result.exitCode, 0, result.stderr);
    assert.ok(endedAt - firstSeenAt > 4000, `the follower printed the first line well before the build ended (${endedAt - firstSeenAt} ms)`);
    const lines = stdout.split('\n');
    for (const line of [`slow: begun ${salt}`, 'slow: middle', 'slow: finished']) assert.ok(lines.includes(line), `${line} followed:\n${stdout}`);
    const built = await build;
    assert.equal(built.exitCode, 0, built.stderr);
    assert.ok((await readLogWithNix(farm, drvPath!)).includes('slow: finished'));
  });

  it('follows on across a coordinator restart with -f: every line once, the follower and the build exit 0', async () => {
    const salt = freshSalt();
    const [drvPath] = await nixInstantiate(file, ['slow'], { salt });
    const build = farm.build([file, '-A', 'slow', '--argstr', 'salt', salt], { timeoutMs: 180_000 });
    await pollFor(
      async () => (await farm.cli(['log', drvPath!, '--json'])).exitCode === 0,
      30_000,
      () => 'the derivation to be known',
    );
    const follower = farm.spawnCli(['log', '-f', drvPath!], { timeoutMs: 180_000 });
    await pollFor(
      () => follower.stdoutSoFar().includes(`slow: begun ${salt}`),
      60_000,
      () => `the first line in the follower's output: ${follower.stdoutSoFar()}`,
    );
    // A graceful stop (SIGTERM) cuts the open log response; the follower must take that for the coordinator leaving, not the build ending.
    await farm.killCoordinator('SIGTERM');
    await farm.restartCoordinator();
    const result = await follower.result;
    assert.equal(result.exitCode, 0, result.stderr);
    assert.match(result.stderr, /lost the coordinator at .* mid-log .*reconnecting/);
    assert.match(result.stderr, /reconnected; following the log again/);
    const lines = result.stdout.split('\n');
    for (const line of [`slow: begun ${salt}`, 'slow: middle', 'slow: finished']) {
      assert.equal(lines.filter((l) => l === line).length, 1, `${line} once in:\n${result.stdout}`);
    }
    const built = await build;
    assert.equal(built.exitCode, 0, built.stderr);
  });

  it("keeps what a worker killed mid-build streamed, marked incomplete, and the re-run's log after it", async () => {
    const salt = freshSalt();
    const [drvPath] = await nixInstantiate(file, ['killable'], { salt });
    const build = farm.build([file, '-A', 'killable', '--argstr', 'salt', salt], { timeoutMs: 180_000 });
    const firstWorker = await pollFor(
      async () => {
        const r = await farm.cli(['log', drvPath!, '--json']);
        if (r.exitCode !== 0) return undefined;
        const meta = JSON.parse(r.stdout) as { live: boolean; attempts: Array<{ worker: string; lines: number }> };
        return meta.live && meta.attempts[0] !== undefined && meta.attempts[0].lines > 0 ? meta.attempts[0].worker : undefined;
      },
      60_000,
      () => 'the first part of the log streamed from a running build',
    );
    await farm.stopWorker(firstWorker, 'SIGKILL');
    const other = firstWorker === 'w1' ? 'w2' : 'w1';
    const marker = `nixfarm: log incomplete: worker ${firstWorker} stopped reporting`;

    // Once the re-run starts, the lost part is on disk, marked incomplete, before the re-run ends.
    const stored = nixLayoutPath(farm, drvPath!);
    const partial = await pollFor(
      () => existsSync(stored) && readFileSync(stored, 'utf8'),
      60_000,
      () => `the lost attempt's log stored at ${stored}`,
    );
    assert.ok(partial.includes(`killable: part one ${salt}`), partial);
    assert.ok(partial.includes(marker), partial);
    assert.ok(!partial.includes('killable: part two'), 'stored while the re-run still runs');

    const built = await build;
    assert.equal(built.exitCode, 0, built.stderr + farm.diagnostics());
    const shown = await farm.cli(['log', drvPath!]);
    assert.equal(shown.exitCode, 0, shown.stderr);
    const text = shown.stdout;
    const lostPart = text.indexOf(`killable: part one ${salt}`);
    const markerAt = text.indexOf(marker);
    const rerunPart = text.indexOf(`killable: part one ${salt}`, markerAt);
    assert.ok(lostPart >= 0 && markerAt > lostPart && rerunPart > markerAt, `lost part, marker, then the re-run:\n${text}`);
    assert.match(text.slice(markerAt), new RegExp(`on worker ${other}:`));
    assert.ok(text.slice(rerunPart).includes('killable: part two'), text);
    const viaNix = await readLogWithNix(farm, drvPath!);
    assert.equal(viaNix, text, 'the stored file holds both attempts');
    const meta = JSON.parse((await farm.cli(['log', drvPath!, '--json'])).stdout) as { complete: boolean; attempts: Array<{ worker: string; end?: string }> };
    assert.equal(meta.complete, false, 'one attempt never reported its end');
    assert.deepEqual(
      meta.attempts.map((a) => [a.worker, a.end ?? null]),
      [
        [firstWorker, null],
        [other, 'succeeded'],
      ],
    );
  });

  // Runs last: it kills the farm's last worker.
  it("stores a killed worker's part, marked incomplete, when the run is cancelled before any re-run", async () => {
    const salt = freshSalt();
    const [drvPath] = await nixInstantiate(file, ['killable'], { salt });
    const build = farm.spawnCli(['build', '--coordinator', farm.address.httpUrl, file, '-A', 'killable', '--argstr', 'salt', salt], { timeoutMs: 120_000 });
    const runId = await pollFor(
      () => /run ([a-z0-9]+):/.exec(build.stderrSoFar())?.[1],
      30_000,
      () => `the run id in: ${build.stderrSoFar()}`,
    );
    const worker = await pollFor(
      async () => {
        const r = await farm.cli(['log', drvPath!, '--json']);
        if (r.exitCode !== 0) return undefined;
        const meta = JSON.parse(r.stdout) as { live: boolean; attempts: Array<{ worker: string; lines: number }> };
        return meta.live && (meta.attempts[0]?.lines ?? 0) > 0 ? meta.attempts[0]!.worker : undefined;
      },
      60_000,
      () => 'the first part of the log streamed',
    );
    await farm.stopWorker(worker, 'SIGKILL');
    const cancelled = await farm.cli(['cancel', runId]);
    assert.equal(cancelled.exitCode, 0, cancelled.stderr);
    await build.result;
    const shown = await farm.cli(['log', drvPath!]);
    assert.equal(shown.exitCode, 0, shown.stderr);
    assert.match(
      shown.stdout,
      new RegExp(`^killable: part one ${salt}\\nnixfarm: log incomplete: worker ${worker} stopped reporting \\(job ${hashPart(drvPath!)}\\S*, try \\d+\\)\\n$`),
    );
    assert.equal(await readLogWithNix(farm, drvPath!), shown.stdout, "stored in Nix's layout too");
  });
});
