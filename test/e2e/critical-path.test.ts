import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { DerivationView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { freshSalt, writeBusyboxDir } from '../harness/nix-fixtures.js';

const CHAIN = 6;
const LEAVES = 10;

/** One long chain beside many short leaves: the shape where the order of ready builds decides the makespan. */
function writeFixture(dir: string): string {
  mkdirSync(dir, { recursive: true });
  writeBusyboxDir(dir);
  const file = join(dir, 'chain-and-leaves.nix');
  writeFileSync(
    file,
    `{ salt ? "" }:
let bb = builtins.path { path = ./busybox; name = "busybox"; };
    mk = name: deps: builtins.derivation { inherit name; system = builtins.currentSystem; builder = "\${bb}/bin/sh";
      args = [ "-c" "\${bb}/bin/busybox sleep 1; echo \${salt} \${toString deps} > $out" ]; };
    chain = builtins.foldl' (prev: i: [ (mk "chain-\${toString i}" prev) ]) [] (builtins.genList (i: i) ${CHAIN});
    leaves = builtins.genList (i: mk "leaf-\${toString i}" []) ${LEAVES};
in { all = mk "all" (chain ++ leaves); }
`,
  );
  return file;
}

describe('critical-path order against FIFO', () => {
  const farm = farmForSuite({ workers: [{ name: 'zeta', maxJobs: 2 }] });
  let file: string;

  before(async () => {
    file = writeFixture(join(farm.dir, 'cp'));
  });

  async function makespan(order: string): Promise<{ ms: number; firstStarted: string }> {
    const result = await farm.build([file, '-A', 'all', '--argstr', 'salt', freshSalt(), '--order', order]);
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const runId = /run (\w+)/.exec(result.stderr)![1]!;
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    assert.equal(derivations.length, CHAIN + LEAVES + 1);
    const start = Math.min(...derivations.map((d) => d.startedAt!));
    const end = Math.max(...derivations.map((d) => d.finishedAt!));
    const first = derivations.find((d) => d.startedAt === start)!;
    return { ms: end - start, firstStarted: first.drvPath };
  }

  it('finishes a long chain beside many leaves sooner than FIFO', async () => {
    const fifo = await makespan('fifo');
    const critical = await makespan('critical-path');
    process.stderr.write(`makespan: critical-path ${critical.ms} ms, fifo ${fifo.ms} ms\n`);
    assert.match(critical.firstStarted, /-chain-0\.drv$/, 'the head of the long chain starts first');
    assert.ok(critical.ms < fifo.ms, `critical-path ${critical.ms} ms should beat fifo ${fifo.ms} ms`);
  });
});
