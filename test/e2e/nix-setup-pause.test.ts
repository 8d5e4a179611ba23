import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { NixSetupError, localStorePool, probeNixBuild, type ServePool, type ServeSession, type WorkerListing, type DerivationView } from '@nixfarm/shared';
import { NixSetupPause } from '@nixfarm/worker';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { chain, freshSalt, scriptedFixture } from '../harness/nix-fixtures.js';
import { pollFor, sleep } from '../harness/poll.js';
import { removeTreeSync } from '../harness/process-cleanup.js';
import { auditRun } from '../chaos/run-audit.js';

/**
 * A worker that passed its start-up probe and then finds, in a build, that
 * its Nix cannot build (here: a system it advertises but its Nix does not
 * build, which the builtin-platform probe cannot see): the build is not the
 * derivation's fault, so it goes back to its queue untried for another
 * worker, and the worker pauses itself, saying why in its heartbeat and
 * logging the fix once.
 */

describe('a worker whose Nix cannot build what it advertises', () => {
  // x86_64-darwin without extra-platforms in its Nix: it takes darwin jobs its Nix refuses
  const farm = farmForSuite({ workers: [{ name: 'fake-mac', systems: ['x86_64-darwin'] }] });

  async function listed(name: string): Promise<WorkerListing | undefined> {
    const out = await farm.cli(['workers', '--json']);
    assert.equal(out.exitCode, 0, out.stderr);
    return (JSON.parse(out.stdout) as WorkerListing[]).find((w) => w.name === name);
  }

  it('hands the build back untried, pauses itself saying why (the fix logged once), and a worker that can builds it', async () => {
    const build = farm.spawnCli(
      ['build', '--coordinator', farm.address.httpUrl, chain(2, { system: 'x86_64-darwin' }).file, '-A', 'all', '--argstr', 'salt', freshSalt()],
      { timeoutMs: 300_000 },
    );
    await pollFor(
      () => build.stderrSoFar().includes('handed back by fake-mac'),
      60_000,
      () => `a hand-back:\n${build.stderrSoFar()}\n${farm.diagnostics()}`,
    );
    const nixSays =
      "worker fake-mac's Nix cannot build: error: a 'x86_64-darwin' with features \\{\\} is required to build '/nix/store/\\w{32}-link-0\\.drv', but I am a 'x86_64-linux' with features \\{[^}]*\\}";
    const fix =
      "\\(fix: make this Nix build it: extra-platforms = x86_64-darwin in nix\\.conf \\(or --nix-option\\) or stop sending it such builds \\(a worker's --system and --features say what it takes\\)\\)";
    assert.match(build.stderrSoFar(), new RegExp(`link-0 handed back by fake-mac \\(${nixSays} ${fix}\\); queued again`));

    const paused = await pollFor(
      async () => (await listed('fake-mac'))?.paused,
      15_000,
      () => 'fake-mac to advertise its pause',
    );
    assert.match(paused, new RegExp(`^${nixSays} ${fix} \\(until the worker is restarted\\)$`));

    // Paused, it takes nothing more: the handed-back build waits, its try not counted.
    const runId = /run (\w+)/.exec(build.stderrSoFar())![1]!;
    const rows = async () => (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`)).derivations;
    await sleep(3000);
    const bottom = (await rows()).find((r) => r.name === 'link-0');
    assert.deepEqual([bottom?.status, bottom?.attempts], ['queued', 0]);
    assert.equal(build.stderrSoFar().match(/handed back by fake-mac/g)?.length, 1, 'taken once, not again and again');

    await farm.startWorker({ name: 'real-mac', systems: ['x86_64-darwin'], nixConfig: ['extra-platforms = x86_64-darwin'] });
    const result = await build.result;
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    assert.deepEqual((await rows()).map((r) => [r.name, r.status, r.worker, r.attempts]).sort(), [
      ['link-0', 'succeeded', 'real-mac', 1],
      ['link-1', 'succeeded', 'real-mac', 1],
    ]);
    assert.deepEqual((await auditRun(farm, runId)).lost, []);

    const fakeMac = farm.workers.get('fake-mac')!;
    assert.equal(fakeMac.process.exitCode, null, 'paused, not gone');
    assert.ok((await listed('fake-mac'))?.paused !== undefined, 'still paused');
    const log = readFileSync(fakeMac.logFile, 'utf8');
    assert.equal(
      log.match(
        /Nix cannot build here: taking no new builds, handing builds back for other workers; fix: make this Nix build it: extra-platforms = x86_64-darwin/g,
      )?.length,
      1,
      'the fix is logged once',
    );
  });
});

describe("the coordinator's own builds when its Nix cannot take them", () => {
  const farm = farmForSuite({ workers: [] });

  // The start-up probe passes (it needs no feature); these preferLocalBuild derivations of the coordinator's system are
  // taken locally (LocalBuilder checks system, not features), and its Nix refuses them: a setup fault on the coordinator.
  const file = scriptedFixture(
    'local-feature',
    `  inherit a b;
  all = mk "local-feature-all" "echo \${a} \${b} > $out";
`,
    `  local = name: derivation { inherit name; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; preferLocalBuild = true; requiredSystemFeatures = [ "nixfarm-missing-feature" ]; args = [ "-c" ("echo " + salt + " > $out") ]; };
  a = local "local-needs-feature-a";
  b = local "local-needs-feature-b";
`,
  );

  it("ends them aborted at once, each with the coordinator's Nix, Nix's words and the fix, and logs the fix once", async () => {
    const started = Date.now();
    const result = await farm.build([file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    const took = Date.now() - started;
    assert.equal(result.exitCode, 1, `${result.stderr}\n${farm.diagnostics()}`);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${/run (\w+)/.exec(result.stderr)![1]}/derivations`);
    const byName = new Map(derivations.map((d) => [d.name, d]));
    assert.equal(byName.get('local-feature-all')?.status, 'dependency-failed');
    for (const name of ['local-needs-feature-a', 'local-needs-feature-b']) {
      const row = byName.get(name);
      assert.deepEqual([row?.status, row?.worker, row?.attempts], ['aborted', 'coordinator', 1], name);
      assert.match(
        row?.error ?? '',
        new RegExp(
          `^the coordinator's Nix cannot build: error: a 'x86_64-linux' with features \\{nixfarm-missing-feature\\} is required to build '/nix/store/\\w{32}-${name}\\.drv', but I am a 'x86_64-linux' with features \\{[^}]*\\}\n` +
            '  fix: make this Nix build it: extra-system-features = nixfarm-missing-feature in nix\\.conf \\(or --nix-option\\)\n' +
            "       or stop sending it such builds \\(a worker's --system and --features say what it takes\\)\n" +
            '       or start the coordinator with --no-local-builds \\(workers then build preferLocalBuild derivations too\\)$',
        ),
      );
    }
    assert.doesNotMatch(result.stderr, /gave up after/);
    // Five tries with back-off (1+2+4+8 s) took over 15 s.
    assert.ok(took < 12_000, `took ${took} ms`);
    const log = readFileSync(join(farm.dir, 'coordinator.log'), 'utf8');
    assert.equal(log.match(/the coordinator's Nix cannot build: its local builds end aborted at once; fix: /g)?.length, 1, 'two derivations, one log line');
  });
});

describe('NixSetupPause with a real Nix whose nix.conf is fixed while it is paused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-setup-pause-'));
  const conf = join(dir, 'nix.conf');
  // NIX_CONFIG would outrank nix.conf: empty, so the file decides
  const env = { NIX_CONF_DIR: dir, NIX_CONFIG: '' };
  let store: ServePool;
  const logged: Array<{ msg: string; fix?: string; level: number }> = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logged.push(JSON.parse(line) as { msg: string; level: number }) });

  before(() => {
    writeFileSync(conf, 'substituters =\nsandbox = true\nbuild-users-group = nixfarm-no-such-group\n');
    store = localStorePool({ env, write: true, maxIdle: 2 });
  });

  after(async () => {
    await store?.close();
    removeTreeSync(dir);
  });

  it('stays paused while the probe fails, runs it only when due, and resumes with fresh sessions once Nix builds', async () => {
    let probes = 0;
    const probe = async (): Promise<unknown> => {
      probes++;
      return probeNixBuild({ store, nix: "worker w1's Nix", env, logger });
    };
    const error = await probe().then(
      () => assert.fail('the probe passed with a missing build-users group'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof NixSetupError && error.code === 'nix-build-users-missing', String(error));
    // A session opened under the broken nix.conf, idle in the pool as a build's would be.
    let old: ServeSession | undefined;
    await store.use(async (session) => {
      old = session;
      await session.connection.queryValidPaths([]);
    });

    const pause = new NixSetupPause({ logger, probe, recheckMs: 300, onResume: () => store.discardIdle() });
    assert.equal(pause.paused, undefined);
    assert.equal(pause.trip(error), true);
    assert.equal(pause.trip(error), false, 'a second build hitting the same wall changes nothing');
    assert.equal(pause.paused, error.oneLine());
    assert.match(
      pause.paused ?? '',
      /^worker w1's Nix cannot build: error: the group 'nixfarm-no-such-group' specified in 'build-users-group' does not exist \(fix: create Nix's build users/,
    );

    probes = 0;
    assert.equal(await pause.check(), error.oneLine(), 'not due yet: no probe');
    assert.equal(probes, 0);
    await sleep(350);
    assert.equal(await pause.check(), error.oneLine(), 'due: probed, still broken');
    assert.equal(probes, 1);
    assert.equal(await pause.check(), error.oneLine());
    assert.equal(probes, 1, 'the next probe waits for the interval again');

    writeFileSync(conf, 'substituters =\nsandbox = true\nbuild-users-group =\n');
    await sleep(350);
    assert.equal(await pause.check(), undefined, 'Nix builds: resumed');
    assert.equal(probes, 2);
    assert.equal(pause.paused, undefined);
    assert.equal(old?.broken, true, 'the session opened under the old nix.conf was closed');

    const errors = logged.filter((l) => l.level >= 50);
    assert.equal(errors.length, 1, JSON.stringify(errors));
    assert.match(errors[0]!.msg, /^Nix cannot build here: taking no new builds, handing builds back for other workers; fix: create Nix's build users/);
    assert.equal(logged.filter((l) => l.msg === 'Nix builds again (a test build passed): taking builds again').length, 1);
  });
});
