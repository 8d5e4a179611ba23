import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { hashPart, type CheckView, type ChecksOverview, type RunView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { runIdOf } from '../harness/build-timeline.js';
import { freshSalt, layeredDag, nixInstantiate, outputsOf, scriptedFixture } from '../harness/nix-fixtures.js';
import { pollFor } from '../harness/poll.js';
import { onProcessExit, removeTreeSync } from '../harness/process-cleanup.js';

/** One derivation that writes the same bits every time, one that writes 8 random bytes beside them. */
const FIXTURE = scriptedFixture(
  'repro',
  `  det = mk "repro-det-\${salt}" "\${bb}/bin/busybox mkdir $out; echo same bits > $out/data";
  rnd = mk "repro-rnd-\${salt}" "\${bb}/bin/busybox mkdir $out; echo same bits > $out/data; \${bb}/bin/busybox od -An -N8 -tx8 /dev/urandom > $out/stamp";
  slowrnd = mk "repro-slowrnd-\${salt}" "\${bb}/bin/busybox sleep 3; \${bb}/bin/busybox mkdir $out; \${bb}/bin/busybox od -An -N8 -tx8 /dev/urandom > $out/stamp";
`,
);

/** A --diff-hook that writes its arguments, one per line, where the test reads them. */
const HOOK_DIR = mkdtempSync(join(tmpdir(), 'nixfarm-diff-hook-'));
onProcessExit(() => removeTreeSync(HOOK_DIR));
const HOOK = join(HOOK_DIR, 'record-args');
const HOOK_ARGS = join(HOOK_DIR, 'args');
writeFileSync(HOOK, `#!/bin/sh\nfor a in "$@"; do echo "$a"; done > ${HOOK_ARGS}\necho "hook saw $#"\n`);
chmodSync(HOOK, 0o755);

/** `nix-store --realise --check` on the coordinator's own store: Nix's verdict, by exit code (0 same, 104 differs). */
async function nixCheck(drvPath: string): Promise<number | undefined> {
  const result = await execa('nix-store', ['--realise', '--check', drvPath, '--option', 'sandbox', 'true', '--option', 'substituters', ''], { reject: false });
  return result.exitCode;
}

describe('reproducibility checks: nixfarm build --check (real workers)', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'w1', maxJobs: 2 },
      { name: 'w2', maxJobs: 2 },
    ],
    coordinatorArgs: ['--diff-hook', HOOK],
  });

  it('builds, rebuilds each requested derivation on the other worker and fails the run on the one that differs; nix-build --check agrees', async () => {
    const salt = freshSalt();
    const [det, rnd] = await nixInstantiate(FIXTURE, ['det', 'rnd'], { salt });
    const result = await farm.build([FIXTURE, '-A', 'det', '-A', 'rnd', '--argstr', 'salt', salt, '--check'], { timeoutMs: 120_000 });
    assert.equal(result.exitCode, 1, `a difference fails the run as nix-build --check does\n${result.stderr}\n${farm.diagnostics()}`);
    assert.match(result.stderr, /reproducible: repro-det-\w+ \(rebuilt on w\d/);
    assert.ok(result.stderr.includes(`NOT REPRODUCIBLE: ${rnd}`), result.stderr);
    assert.match(result.stderr, /not reproducible: .*nixfarm diff DRV shows how/);

    const run = await farm.api<RunView>(`/api/runs/${runIdOf(result.stderr)}`);
    assert.equal(run.status, 'failed');
    const checks = new Map((run.checks ?? []).map((c) => [c.drvPath, c]));
    assert.equal(checks.size, 2, JSON.stringify(run.checks));
    const detCheck = checks.get(det!)!;
    const rndCheck = checks.get(rnd!)!;
    assert.equal(detCheck.state, 'reproducible');
    assert.equal(rndCheck.state, 'not-reproducible');
    for (const check of [detCheck, rndCheck]) {
      assert.ok(check.builder === 'w1' || check.builder === 'w2', `builder ${check.builder}`);
      assert.notEqual(check.checker, check.builder, 'the rebuild runs on the other worker');
      assert.equal(check.excludedWorker, check.builder);
      assert.equal(check.outputs.length, 1);
    }
    assert.equal(detCheck.outputs[0]!.expected, detCheck.outputs[0]!.actual);
    assert.notEqual(rndCheck.outputs[0]!.expected, rndCheck.outputs[0]!.actual);
    assert.equal(rndCheck.outputs[0]!.differs, true);

    // From the worker stores: only the checker has the .drv (a check builds in Nix's check mode from it; a build never copies it).
    for (const check of [detCheck, rndCheck]) {
      const checker = farm.workers.get(check.checker!)!.machine;
      const builder = farm.workers.get(check.builder!)!.machine;
      assert.equal((await checker.isValid([check.drvPath])).size, 1, `${check.checker} rebuilt ${check.drvPath}`);
      assert.equal((await builder.isValid([check.drvPath])).size, 0, `${check.builder} only built ${check.drvPath} (no .drv in its store)`);
      assert.equal(existsSync(checker.hostPathOf(`${check.outputs[0]!.path}.check`)), false, 'the rebuilt copy left the checker');
    }

    // The difference, shown: the changed file with both contents.
    const rndOut = rndCheck.outputs[0]!.path;
    const kept = readFileSync(join(rndOut, 'stamp'), 'utf8').trim();
    const copy = join(farm.coordinatorStateDir, 'checks', hashPart(rnd!), 'rebuilt', 'out');
    const rebuilt = readFileSync(join(copy, 'stamp'), 'utf8').trim();
    assert.notEqual(kept, rebuilt);
    assert.equal(readFileSync(join(copy, 'data'), 'utf8'), 'same bits\n');
    assert.equal(rndCheck.diff?.changed, 1, JSON.stringify(rndCheck.diff));
    assert.equal(rndCheck.diff?.added, 0);
    assert.equal(rndCheck.diff?.removed, 0);
    const diff = await farm.cli(['diff', rnd!]);
    assert.equal(diff.exitCode, 0, diff.stderr);
    assert.match(diff.stdout, /\bstamp\b/);
    assert.ok(diff.stdout.includes(kept) && diff.stdout.includes(rebuilt), diff.stdout);
    assert.doesNotMatch(diff.stdout, /\bdata\b.*changed|changed.*\bdata\b/);
    const sameDiff = await farm.cli(['diff', det!]);
    assert.equal(sameDiff.exitCode, 0);
    assert.match(sameDiff.stderr, /reproducible: rebuilt on w\d .* same NAR hashes/);

    // The diff hook ran with Nix's arguments: the coordinator's output, the rebuilt copy, the .drv, a working directory.
    const hookArgs = readFileSync(HOOK_ARGS, 'utf8').trim().split('\n');
    assert.deepEqual(hookArgs.slice(0, 3), [rndOut, copy, rnd]);
    assert.equal(rndCheck.diffHook?.exitCode, 0);
    assert.match(rndCheck.diffHook?.output ?? '', /hook saw 4/);

    // The dashboard lists the mismatch with a link to its report.
    const dashboard = await farm.api<{ checks?: ChecksOverview }>('/api/dashboard');
    const listed = dashboard.checks?.mismatches.find((m) => m.drvPath === rnd);
    assert.ok(listed?.diff !== undefined, JSON.stringify(dashboard.checks));
    const report = await fetch(new URL(listed.diff.url, farm.address.httpUrl), { headers: { authorization: `Bearer ${farm.adminToken}` } });
    assert.equal(report.status, 200);
    assert.equal(await report.text(), diff.stdout);
    assert.ok((dashboard.checks?.counts['not-reproducible'] ?? 0) >= 1);

    // nixfarm runs RUN shows each check.
    const shown = await farm.cli(['runs', run.id]);
    assert.equal(shown.exitCode, 0, shown.stderr);
    assert.ok(shown.stdout.includes(`not-reproducible   ${rnd}  rebuilt on ${rndCheck.checker}, built by ${rndCheck.builder}`), shown.stdout);
    assert.ok(shown.stdout.includes(`reproducible       ${det}  rebuilt on ${detCheck.checker}, built by ${detCheck.builder}`), shown.stdout);

    // nixfarm checks lists it among the newest mismatches.
    const listing = await farm.cli(['checks']);
    assert.equal(listing.exitCode, 0, listing.stderr);
    assert.match(listing.stdout, /^\d+ reproducible, [1-9]\d* not reproducible/);
    assert.match(
      listing.stdout,
      new RegExp(`newest mismatches[^]*not-reproducible +repro-rnd-${salt} rebuilt on ${rndCheck.checker} \\(built by ${rndCheck.builder}\\): 1 changed`),
    );

    // Nix's own check on one machine says the same of both.
    assert.equal(await nixCheck(det!), 0);
    assert.equal(await nixCheck(rnd!), 104);
  });

  it('checks outputs that are valid already without building anything, on a worker other than the one that built them', async () => {
    const salt = freshSalt();
    const built = await farm.build([FIXTURE, '-A', 'det', '--argstr', 'salt', salt], { timeoutMs: 60_000 });
    assert.equal(built.exitCode, 0, built.stderr);
    const [det] = await nixInstantiate(FIXTURE, ['det'], { salt });
    const builder = (
      await farm.api<{ derivations: Array<{ drvPath: string; worker?: string }> }>(`/api/runs/${runIdOf(built.stderr)}/derivations`)
    ).derivations.find((d) => d.drvPath === det)?.worker;
    assert.ok(builder === 'w1' || builder === 'w2');

    const checked = await farm.build([FIXTURE, '-A', 'det', '--argstr', 'salt', salt, '--check'], { timeoutMs: 60_000 });
    assert.equal(checked.exitCode, 0, `${checked.stderr}\n${farm.diagnostics()}`);
    assert.match(checked.stderr, /0 derivations to build/);
    const run = await farm.api<RunView>(`/api/runs/${runIdOf(checked.stderr)}`);
    assert.equal(run.status, 'succeeded');
    assert.equal(run.checks?.[0]?.state, 'reproducible');
    assert.equal(run.checks?.[0]?.builder, builder);
    assert.notEqual(run.checks?.[0]?.checker, builder);
    const outputs = await outputsOf(det!);
    assert.equal(checked.stdout.trim(), outputs.out);
  });

  it('keeps a check across a coordinator restart: the run ends with its verdict and the difference is shown', async () => {
    const salt = freshSalt();
    const { build, runId } = await farm.submitInBackground([FIXTURE, '-A', 'slowrnd', '--argstr', 'salt', salt, '--check']);
    await pollFor(
      async () => ((await farm.api<RunView>(`/api/runs/${runId}`)).checks?.[0]?.state === 'running' ? true : undefined),
      60_000,
      () => `the check to start:\n${farm.diagnostics()}`,
    );
    await farm.restartCoordinator();
    const result = await build.result;
    assert.equal(result.exitCode, 1, `${result.stderr}\n${farm.diagnostics()}`);
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    const check = run.checks?.[0];
    assert.equal(check?.state, 'not-reproducible', JSON.stringify(run.checks));
    assert.notEqual(check?.checker, check?.builder);
    assert.equal(check?.diff?.changed, 1);
    const diff = await farm.cli(['diff', check!.drvPath]);
    assert.equal(diff.exitCode, 0, diff.stderr);
    assert.match(diff.stdout, /\bstamp\b/);
  });

  it('refuses --check with --jobset, naming the alternative', async () => {
    const result = await farm.build(['--jobset', FIXTURE, '--check'], { timeoutMs: 30_000 });
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /--check-fraction/);
  });

  it('says there is no check of a derivation never checked', async () => {
    const [det] = await nixInstantiate(FIXTURE, ['det'], { salt: freshSalt() });
    const result = await farm.cli(['diff', det!]);
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /no reproducibility check of .*nixfarm build --check/);
  });
});

/** A slow build whose background check holds a worker, and two quick ones that arrive meanwhile. */
const PREEMPT = scriptedFixture(
  'preempt',
  `  slow = mk "preempt-slow-\${salt}" "\${bb}/bin/busybox sleep 5; \${bb}/bin/busybox mkdir $out";
  b1 = mk "preempt-b1-\${salt}" "\${bb}/bin/busybox sleep 2; \${bb}/bin/busybox mkdir $out";
  b2 = mk "preempt-b2-\${salt}" "\${bb}/bin/busybox sleep 2; \${bb}/bin/busybox mkdir $out";
`,
);

describe('reproducibility checks: --check-fraction 1 samples every build (real workers)', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'w1', maxJobs: 1 },
      { name: 'w2', maxJobs: 1 },
    ],
    coordinatorArgs: ['--check-fraction', '1'],
  });

  it('checks every build of a run on the other worker, after the run ended on its own', async () => {
    const dag = layeredDag({ layers: 2, width: 4 });
    const result = await farm.build([dag.file, '-A', 'all', '--argstr', 'salt', freshSalt()], { timeoutMs: 120_000 });
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const runId = runIdOf(result.stderr);
    const { derivations } = await farm.api<{ derivations: Array<{ drvPath: string; worker?: string; status: string }> }>(`/api/runs/${runId}/derivations`);
    assert.ok(derivations.length >= 9, `${derivations.length} derivations`);
    // The run did not wait for its samples; they end after it.
    const overview = await pollFor(
      async () => {
        const o = await farm.api<ChecksOverview>('/api/checks?limit=100');
        return o.counts.reproducible >= derivations.length ? o : undefined;
      },
      120_000,
      () => `every build checked:\n${farm.diagnostics()}`,
    );
    assert.equal(overview.fraction, 1);
    assert.equal(overview.counts['not-reproducible'], 0);
    assert.equal(overview.counts.failed, 0);
    const byDrv = new Map(overview.recent.map((c: CheckView) => [c.drvPath, c]));
    for (const d of derivations) {
      const check = byDrv.get(d.drvPath);
      assert.ok(check !== undefined, `no check of ${d.drvPath}`);
      assert.equal(check.background, true);
      assert.equal(check.builder, d.worker);
      assert.notEqual(check.checker, d.worker, `${d.drvPath} rebuilt on the worker that built it`);
    }
    const metrics = await (await fetch(new URL('/metrics', farm.address.httpUrl), { headers: { authorization: `Bearer ${farm.adminToken}` } })).text();
    const sampled = Number(/^nixfarm_checks_total\{result="reproducible",kind="sampled"\} (\d+)/m.exec(metrics)?.[1]);
    assert.ok(
      sampled >= derivations.length,
      metrics
        .split('\n')
        .filter((l) => l.includes('checks'))
        .join('\n'),
    );
    assert.match(metrics, /^nixfarm_checks_pending 0$/m);
  });

  it('hands a background check back at once when real work waits for its slot, and checks it again later', async () => {
    const salt = freshSalt();
    const [slow] = await nixInstantiate(PREEMPT, ['slow'], { salt });
    const first = await farm.build([PREEMPT, '-A', 'slow', '--argstr', 'salt', salt], { timeoutMs: 60_000 });
    assert.equal(first.exitCode, 0, first.stderr);
    const running = await pollFor(
      async () => {
        const check = await farm.api<CheckView>(`/api/checks/${hashPart(slow!)}`).catch(() => undefined);
        return check?.state === 'running' ? check : undefined;
      },
      30_000,
      () => `the background check of slow to start:\n${farm.diagnostics()}`,
    );
    // The builder is idle; the other worker's one slot holds the 5 s check. Two builds arrive.
    const second = await farm.build([PREEMPT, '-A', 'b1', '-A', 'b2', '--argstr', 'salt', salt], { timeoutMs: 60_000 });
    assert.equal(second.exitCode, 0, second.stderr);
    const { derivations } = await farm.api<{ derivations: Array<{ name: string; worker?: string; startedAt?: number }> }>(
      `/api/runs/${runIdOf(second.stderr)}/derivations`,
    );
    const done = await pollFor(
      async () => {
        const check = await farm.api<CheckView>(`/api/checks/${hashPart(slow!)}`);
        return check.state === 'reproducible' ? check : undefined;
      },
      60_000,
      () => `the check of slow to end:\n${farm.diagnostics()}`,
    );
    // Without the hand-back the two builds would have queued behind each other on the free worker.
    assert.deepEqual(new Set(derivations.map((d) => d.worker)), new Set(['w1', 'w2']), JSON.stringify(derivations));
    assert.ok(
      derivations.every((d) => (d.startedAt ?? Infinity) < (running.startedAt ?? 0) + 5000),
      `both builds started while the check would still have held its worker: ${JSON.stringify(derivations)} ${JSON.stringify(running)}`,
    );
    assert.equal(done.checker, running.checker, 'the check went back to the only worker allowed to take it');
    assert.notEqual(done.checker, done.builder);
  });
});
