import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DerivationView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { peakConcurrency } from '../harness/build-timeline.js';
import {
  freshSalt,
  invalidOutputsOf,
  layeredDag,
  multiOutput,
  nixInstantiate,
  outputPathsOf,
  derivationClosure,
  writeBusyboxDir,
} from '../harness/nix-fixtures.js';

describe('building a Nix expression across two workers', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'alpha', maxJobs: 2 },
      { name: 'beta', maxJobs: 2 },
    ],
  });

  it('builds a DAG of 50+ derivations on the workers, each once, with outputs valid on the coordinator and equal to nix-instantiate', async () => {
    const dag = layeredDag({ layers: 6, width: 9 });
    assert.ok(dag.expectedDrvCount >= 50, `fixture has ${dag.expectedDrvCount} derivations`);
    const salt = freshSalt();
    const result = await farm.build([dag.file, ...dag.attrs.flatMap((a) => ['-A', a]), '--argstr', 'salt', salt]);
    assert.equal(result.exitCode, 0, `build failed:\n${result.stderr}\n${farm.diagnostics()}`);

    // Same output paths nix-build would print.
    const [rootDrv] = await nixInstantiate(dag.file, dag.attrs, { salt });
    const expected = await outputPathsOf(rootDrv!);
    assert.deepEqual(result.stdout.trim().split('\n'), expected);

    // Every derivation of the closure is built and valid in the coordinator's (host) store.
    const drvs = await derivationClosure([rootDrv!]);
    assert.equal(drvs.length, dag.expectedDrvCount);
    assert.deepEqual(await invalidOutputsOf(drvs), [], 'every output is valid on the coordinator');

    // Each derivation built exactly once, on a worker, never on the coordinator.
    const runId = /run (\w+)/.exec(result.stderr)?.[1];
    assert.ok(runId, 'the CLI names the run');
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    assert.equal(derivations.length, dag.expectedDrvCount);
    for (const d of derivations) {
      assert.equal(d.status, 'succeeded', d.drvPath);
      assert.equal(d.attempts, 1, `${d.drvPath} built once`);
      assert.ok(d.worker === 'alpha' || d.worker === 'beta', `${d.drvPath} built on a worker`);
    }
    const usedWorkers = new Set(derivations.map((d) => d.worker));
    assert.equal(usedWorkers.size, 2, 'both workers took part');
    for (const w of ['alpha', 'beta']) {
      const peak = peakConcurrency(derivations, w);
      assert.ok(peak <= 2, `${w} ran ${peak} builds at once with max-jobs 2`);
      assert.ok(peak >= 1);
    }
    // The workers' own logs agree: one successful build per derivation across both, none twice.
    const reported = new Map<string, number>();
    for (const w of farm.workers.values()) {
      for (const line of readFileSync(w.logFile, 'utf8').split('\n')) {
        if (!line.includes('"build finished"')) continue;
        const entry = JSON.parse(line) as { drvPath: string; outcome: string };
        if (entry.outcome === 'succeeded') reported.set(entry.drvPath, (reported.get(entry.drvPath) ?? 0) + 1);
      }
    }
    assert.equal(reported.size, dag.expectedDrvCount, 'every derivation built on a worker');
    for (const d of drvs) assert.equal(reported.get(d), 1, `${d} built exactly once`);

    // The progress on stderr says which worker built what.
    assert.match(result.stderr, /building node-\d+-\d+ on (alpha|beta)/);

    // A second identical run builds nothing.
    const again = await farm.build([dag.file, ...dag.attrs.flatMap((a) => ['-A', a]), '--argstr', 'salt', salt]);
    assert.equal(again.exitCode, 0, again.stderr);
    assert.equal(again.stdout, result.stdout);
    assert.match(again.stderr, /run \w+: 0 derivations to build/);
  });

  it('builds preferLocalBuild derivations on the coordinator itself and the rest on workers', async () => {
    const dir = join(farm.dir, 'local-build');
    mkdirSync(dir, { recursive: true });
    writeBusyboxDir(dir);
    const file = join(dir, 'local.nix');
    writeFileSync(
      file,
      `{ salt ? "" }:
let bb = builtins.path { path = ./busybox; name = "busybox"; };
    mk = attrs: builtins.derivation ({ system = builtins.currentSystem; builder = "\${bb}/bin/sh"; } // attrs);
in rec {
  config = mk { name = "local-config"; preferLocalBuild = true; args = [ "-c" "echo config \${salt} > $out" ]; };
  app = mk { name = "remote-app"; args = [ "-c" "echo app \${config} > $out" ]; };
}
`,
    );
    const result = await farm.build([file, '-A', 'app', '--argstr', 'salt', freshSalt()]);
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    assert.match(result.stderr, /built local-config on coordinator/);
    assert.match(result.stderr, /built remote-app on (alpha|beta)/);
  });

  it('brings back both outputs of a multi-output derivation', async () => {
    const fixture = multiOutput();
    const salt = freshSalt();
    const result = await farm.build([fixture.file, '-A', 'producer', '-A', 'producer.out', '-A', 'consumer', '--argstr', 'salt', salt]);
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const [producerDrv] = await nixInstantiate(fixture.file, ['producer'], { salt });
    const outputs = await outputPathsOf(producerDrv!);
    assert.equal(outputs.length, 2);
    const lines = result.stdout.trim().split('\n');
    assert.equal(lines.length, 3);
    assert.ok(lines[0]!.endsWith('-foo'), `-A producer selects the first output, foo: ${lines[0]}`);
    assert.deepEqual(new Set(lines.slice(0, 2)), new Set(outputs));
    const { spawnSync } = await import('node:child_process');
    const check = spawnSync('nix-store', ['--check-validity', ...lines], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr);
  });
});
