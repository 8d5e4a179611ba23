import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DerivationView } from '@nixfarm/shared';
import { spawnNixfarm } from '../harness/test-farm.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { runIdOf } from '../harness/build-timeline.js';
import { freshSalt, nixInstantiate, outputPathsOf, scriptedFixture } from '../harness/nix-fixtures.js';
import { removeTreeSync } from '../harness/process-cleanup.js';

/** The worker's --max-log-size in this file: 4 KiB. */
const LIMIT = 4096;
/** Lines the chatty builder prints to stderr first, then pauses: about 250 bytes, well under the limit, so they reach the log whatever Nix's reads look like. */
const EARLY_LINES = 10;
/** Lines it then prints at once to stderr, about 70 bytes each: some 35 times the limit. */
const CHATTY_LINES = 2000;

/**
 * `chatty` prints a few lines, pauses, then prints far more than the limit
 * to stderr at once, then would write its output; `quiet` prints one line and writes its output. Every line carries
 * the salt, so no store has seen them before.
 */
function limitFixture(): string {
  return scriptedFixture(
    'log-limit',
    `  chatty = mk "chatty" ("echo 'chatty: begins " + salt + "'; j=0; while [ $j -lt ${EARLY_LINES} ]; do echo \\"chatty: early line $j\\" >&2; j=$((j+1)); done; \${bb}/bin/busybox sleep 1; i=0; while [ $i -lt ${CHATTY_LINES} ]; do echo \\"chatty: noise line $i, padded out to make the log long enough\\" >&2; i=$((i+1)); done; echo 'chatty: the end'; echo ok > $out");
  quiet = mk "quiet" ("echo 'quiet: " + salt + "'; echo ok > $out");
`,
  );
}

function valid(paths: readonly string[]): boolean {
  return spawnSync('nix-store', ['--check-validity', ...paths], { stdio: 'ignore' }).status === 0;
}

describe('a worker with --max-log-size', () => {
  const farm = farmForSuite({ workers: [{ name: 'tight', maxJobs: 2, extraArgs: ['--max-log-size', '4K'] }] });
  let file: string;

  before(async () => {
    file = limitFixture();
  });

  it('ends a build that logs past the limit as log-limit-exceeded, keeps at most the limit of its log, and builds its sibling', async () => {
    const salt = freshSalt();
    const [chattyDrv, quietDrv] = await nixInstantiate(file, ['chatty', 'quiet'], { salt });
    const result = await farm.build([file, '-A', 'chatty', '-A', 'quiet', '--argstr', 'salt', salt], { timeoutMs: 180_000 });
    assert.equal(result.exitCode, 1, `the run fails\n${result.stderr}\n${farm.diagnostics()}`);
    const runId = runIdOf(result.stderr);

    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    assert.equal(derivations.length, 2, JSON.stringify(derivations));
    const chatty = derivations.find((d) => d.drvPath === chattyDrv);
    const quiet = derivations.find((d) => d.drvPath === quietDrv);
    assert.equal(chatty?.status, 'log-limit-exceeded', JSON.stringify(derivations));
    assert.equal(chatty?.worker, 'tight');
    assert.equal(chatty?.attempts, 1, "a log over the limit is the build's own failure: not retried");
    assert.equal(quiet?.status, 'succeeded', JSON.stringify(derivations));
    const run = await farm.api<{ status: string }>(`/api/runs/${runId}`);
    assert.equal(run.status, 'failed');
    assert.match(result.stderr, /LOG-LIMIT-EXCEEDED|log-limit-exceeded/i, result.stderr);

    // The sibling's output is valid in the coordinator's store; the stopped build left nothing there.
    assert.ok(valid(await outputPathsOf(quietDrv!)), "quiet's output is valid on the coordinator");
    assert.ok(!valid(await outputPathsOf(chattyDrv!)), 'chatty was stopped: no output on the coordinator');

    // The stored log: the beginning, cut at about the limit, with a note saying why; never the whole output.
    const shown = await farm.cli(['log', chattyDrv!]);
    assert.equal(shown.exitCode, 0, shown.stderr);
    const log = shown.stdout;
    assert.ok(log.includes(`chatty: begins ${salt}`), log.slice(0, 500));
    for (let j = 0; j < EARLY_LINES; j++)
      assert.ok(log.split('\n').includes(`chatty: early line ${j}`), `the lines before the flood are kept:\n${log.slice(0, 1000)}`);
    assert.match(log, /nixfarm: log cut: the build logged more than 4096 bytes \(the worker's --max-log-size\) and was stopped \(log-limit-exceeded\)/);
    assert.ok(!log.includes(`chatty: noise line ${CHATTY_LINES - 1},`), 'not the last noise line');
    assert.ok(!log.includes('chatty: the end'), 'not the end of the output');
    const noiseLines = log.split('\n').filter((l) => l.startsWith('chatty: noise line ')).length;
    const noiseBytes = log
      .split('\n')
      .filter((l) => l.startsWith('chatty: noise line '))
      .reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
    assert.ok(noiseBytes <= LIMIT, `at most the limit of the builder's output is kept (${noiseBytes} bytes in ${noiseLines} lines)`);
    // Nix reads the builder's output in chunks and stops it at the first chunk that crosses the limit, dropping
    // that chunk: of the flood, anything from none to just under the limit reaches the log, never a tenth of it.
    assert.ok(noiseLines < CHATTY_LINES / 10, `not all of the output is kept (${noiseLines} of ${CHATTY_LINES} lines)`);
    process.stderr.write(
      `log-limit: stored log of chatty: ${Buffer.byteLength(log)} bytes, ${noiseLines} of ${CHATTY_LINES} noise lines (${noiseBytes} bytes)\n`,
    );
    // A few hundred bytes of headers and the note on top of the limit, never tens of KiB.
    assert.ok(Buffer.byteLength(log) <= LIMIT + 1024, `stored log is ${Buffer.byteLength(log)} bytes`);

    // The quiet sibling's log is whole.
    const quietLog = await farm.cli(['log', quietDrv!]);
    assert.equal(quietLog.exitCode, 0, quietLog.stderr);
    assert.ok(quietLog.stdout.includes(`quiet: ${salt}`), quietLog.stdout);
    assert.doesNotMatch(quietLog.stdout, /log cut/);
  });
});

describe('--max-log-size values', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-log-limit-config-'));
  after(() => removeTreeSync(dir));
  // Nothing listens at these addresses: a worker that got past its config would hang or say it cannot reach Redis.
  const WORKER = [
    'worker',
    '--redis',
    'redis://127.0.0.1:1',
    '--coordinator',
    '127.0.0.1:1',
    '--host-key',
    'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8= coordinator',
    '--state-dir',
    join(dir, 'worker'),
    '--name',
    'w1',
  ];
  const cases: Array<{ what: string; args: () => string[]; message: RegExp }> = [
    {
      what: '--max-log-size lots',
      args: () => [...WORKER, '--max-log-size', 'lots'],
      message:
        /maxLogSize \(--max-log-size\): must be a whole number of bytes, optionally with a K, M or G suffix \(powers of 1024, like 65536, 4K or 64M\) \(got "lots"\)/,
    },
    { what: '--max-log-size 0', args: () => [...WORKER, '--max-log-size', '0'], message: /maxLogSize \(--max-log-size\): must be from 1K to 4G .*; got "0"/ },
    {
      what: 'maxLogSize 1.5 in a config file',
      args: () => {
        const config = join(dir, 'worker.json');
        writeFileSync(config, JSON.stringify({ maxLogSize: 1.5 }));
        return [...WORKER, '--config', config];
      },
      message: /maxLogSize \(in \S+worker\.json\): must be a whole number of bytes, optionally with a K, M or G suffix .* \(got 1\.5\)/,
    },
  ];
  for (const c of cases) {
    it(`${c.what}: exit 2, naming the field, where it came from and the allowed form`, async () => {
      const result = await spawnNixfarm(c.args(), { timeoutMs: 30_000 }).result;
      assert.equal(result.exitCode, 2, `exit ${result.exitCode}\n${result.stderr}`);
      assert.match(result.stderr, /^nixfarm: invalid worker config:/, result.stderr);
      assert.match(result.stderr, c.message, result.stderr);
      assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
      assert.doesNotMatch(result.stderr, /cannot reach Redis/, 'it never got as far as connecting');
    });
  }

  it('shows the flag in nixfarm worker --help', async () => {
    const result = await spawnNixfarm(['worker', '--help'], { timeoutMs: 30_000 }).result;
    assert.equal(result.exitCode, 0, result.stderr);
    // commander wraps the text to the terminal's width: compare it with the wrapping undone
    const help = result.stdout.replace(/\s+/g, ' ');
    assert.ok(
      help.includes(
        "--max-log-size <bytes> Nix's max-log-size for builds here: a build that logs more ends as log-limit-exceeded, and its stored log is cut there; bytes, or with a K, M or G suffix like 64M (default 64M)",
      ),
      result.stdout,
    );
  });
});
