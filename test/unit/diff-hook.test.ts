import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { checkDiffHookProgram, runDiffHook } from '@nixfarm/coordinator';
import { createLogger } from '@nixfarm/shared';

/** The user's diff hook, run as Nix runs its diff-hook: real scripts, no shell in between. */
const logger = createLogger({ name: 'test', level: 'silent' });
const root = mkdtempSync(join(tmpdir(), 'nixfarm-diff-hook-'));
after(() => rmSync(root, { recursive: true, force: true }));

function script(name: string, body: string): string {
  const path = join(root, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

const ARGS = {
  expected: '/nix/store/0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-hello',
  actual: '/tmp/check/0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-hello',
  drvPath: '/nix/store/1c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-hello.drv',
  workDir: '/tmp/check/work dir',
};

describe('runDiffHook', () => {
  it('passes the two outputs, the .drv and the working directory in that order, in /, and returns its stdout and stderr', async () => {
    const hook = script('print-args', 'for a in "$@"; do echo "arg: $a"; done\necho "cwd: $(pwd)"\necho "on stderr" >&2');
    const result = await runDiffHook({ program: hook, ...ARGS, logger });
    assert.equal(result.exitCode, 0);
    assert.equal(result.timedOut, false);
    assert.equal(
      result.output,
      [`arg: ${ARGS.expected}`, `arg: ${ARGS.actual}`, `arg: ${ARGS.drvPath}`, `arg: ${ARGS.workDir}`, 'cwd: /', 'on stderr', ''].join('\n'),
    );
  });

  it('finds a program by its name on PATH', async () => {
    const result = await runDiffHook({ program: 'echo', ...ARGS, logger });
    assert.equal(result.exitCode, 0);
    assert.equal(result.output, `${ARGS.expected} ${ARGS.actual} ${ARGS.drvPath} ${ARGS.workDir}\n`);
  });

  it("reports a failing hook's exit code and output without throwing", async () => {
    const hook = script('fails', 'echo "comparing $1"\necho "it broke" >&2\nexit 3');
    const result = await runDiffHook({ program: hook, ...ARGS, logger });
    assert.equal(result.exitCode, 3);
    assert.equal(result.output, `comparing ${ARGS.expected}\nit broke\ndiff hook ${hook} exited with code 3\n`);
  });

  it('names a program that does not exist', async () => {
    const missing = join(root, 'no-such-hook');
    const result = await runDiffHook({ program: missing, ...ARGS, logger });
    assert.equal(result.exitCode, undefined);
    assert.match(result.output, new RegExp(`^diff hook ${missing} not found: give an absolute path or the name of a program on the coordinator's PATH\n$`));
    const byName = await runDiffHook({ program: 'nixfarm-no-such-diff-hook', ...ARGS, logger });
    assert.match(byName.output, /^diff hook nixfarm-no-such-diff-hook not found/);
  });

  it('stops a hook that takes too long, with the programs it started, and keeps its output so far', async () => {
    const hook = script('slow', 'echo started\nsleep 30\necho never');
    const started = Date.now();
    const result = await runDiffHook({ program: hook, ...ARGS, timeoutMs: 300, logger });
    assert.ok(Date.now() - started < 3_000, `stopped after ${Date.now() - started} ms`);
    assert.equal(result.timedOut, true);
    assert.equal(result.exitCode, undefined);
    assert.equal(result.output, `started\ndiff hook ${hook} did not finish within 300 ms and was stopped\n`);
  });

  it('keeps the first 64 KiB of a talkative hook and reads the rest', async () => {
    const hook = script('talkative', 'head -c 300000 /dev/zero | tr "\\0" x\nexit 0');
    const result = await runDiffHook({ program: hook, ...ARGS, logger });
    assert.equal(result.exitCode, 0);
    assert.equal(result.truncated, true);
    assert.equal(result.output, 'x'.repeat(64 * 1024));
  });
});

describe('checkDiffHookProgram', () => {
  it('takes an executable path or a name on PATH', async () => {
    assert.equal(await checkDiffHookProgram('/bin/true'), '/bin/true');
    assert.equal(await checkDiffHookProgram('true'), 'true');
  });

  it('refuses an empty value, a command line, a missing program and one not on PATH, each saying what to give', async () => {
    await assert.rejects(checkDiffHookProgram(''), /--diff-hook is empty: give the path of a program/);
    await assert.rejects(
      checkDiffHookProgram('diffoscope --text -'),
      /^ValidationError: --diff-hook "diffoscope --text -" contains whitespace: give a program, not a command line: Nix's diff-hook takes a program too; wrap arguments in a script$/,
    );
    await assert.rejects(checkDiffHookProgram('/nonexistent/hook'), /--diff-hook \/nonexistent\/hook does not exist or is not executable/);
    await assert.rejects(
      checkDiffHookProgram('no-such-hook-anywhere'),
      /--diff-hook no-such-hook-anywhere is not on the coordinator's PATH: give its full path/,
    );
  });
});
