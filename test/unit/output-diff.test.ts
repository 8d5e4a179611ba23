import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { diffOutputs, renderOutputDiff, type DiffEntry } from '@nixfarm/coordinator';

/**
 * How a rebuilt output differs from the coordinator's copy, on real trees in
 * temp dirs: the built-in listing (diffoscope off) for every kind of change,
 * line diffs of small text files, single-file outputs, the rendered report;
 * and diffoscope's report when it is installed.
 */
const root = mkdtempSync(join(tmpdir(), 'nixfarm-output-diff-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

/** A tree from a spec: string = file contents, { exec } = executable file, { link } = symlink, object = directory. */
type Spec = { [name: string]: string | Buffer | { exec: string } | { link: string } | Spec };
function tree(spec: Spec, at = join(root, `t${dirs++}`)): string {
  mkdirSync(at, { recursive: true });
  for (const [name, value] of Object.entries(spec)) {
    const path = join(at, name);
    if (typeof value === 'string' || Buffer.isBuffer(value)) writeFileSync(path, value);
    else if ('exec' in value && typeof value.exec === 'string') {
      writeFileSync(path, value.exec);
      chmodSync(path, 0o755);
    } else if ('link' in value && typeof value.link === 'string') symlinkSync(value.link, path);
    else tree(value as Spec, path);
  }
  return at;
}

function byPath(entries: DiffEntry[]): Record<string, DiffEntry> {
  return Object.fromEntries(entries.map((e) => [e.path, e]));
}

const onPath = (program: string) => (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && isExecutable(join(dir, program)));
function isExecutable(path: string): boolean {
  try {
    execFileSync('test', ['-x', path]);
    return true;
  } catch {
    return false;
  }
}

describe('diffOutputs: the built-in listing', () => {
  it('names every added, removed, changed and type-changed path, sorted, with sizes, hashes and symlink targets', async () => {
    const expected = tree({
      stamp: 'built at 10:00\n',
      same: 'unchanged\n',
      gone: 'only here\n',
      bin: { tool: { exec: '#!/bin/sh\necho hi\n' }, run: { exec: 'x' } },
      lib: { 'a.so': 'AAA' },
      link: { link: 'stamp' },
      samelink: { link: 'same' },
      thing: 'a file that becomes a directory',
    });
    const actual = tree({
      stamp: 'built at 10:07\n',
      same: 'unchanged\n',
      'new': 'only there\n',
      bin: { tool: '#!/bin/sh\necho hi\n', run: { exec: 'x' } },
      lib: { 'a.so': 'AAA' },
      link: { link: 'same' },
      samelink: { link: 'same' },
      thing: { inside: 'x' },
    });
    const diff = await diffOutputs({ expected, actual, diffoscope: false });
    assert.equal(diff.tool, 'listing');
    assert.equal(diff.diffoscope, undefined);
    assert.deepEqual(
      diff.entries.map((e) => [e.path, e.change]),
      [
        ['bin/tool', 'changed'],
        ['gone', 'removed'],
        ['link', 'changed'],
        ['new', 'added'],
        ['stamp', 'changed'],
        ['thing', 'type-changed'],
        ['thing/inside', 'added'],
      ],
    );
    assert.deepEqual(diff.summary, { added: 2, removed: 1, changed: 4 });
    const e = byPath(diff.entries);
    // the executable bit alone: same size and hash, no line diff
    assert.equal(e['bin/tool']!.expected!.executable, true);
    assert.equal(e['bin/tool']!.actual!.executable, false);
    assert.equal(e['bin/tool']!.expected!.sha256, e['bin/tool']!.actual!.sha256);
    assert.equal(e['bin/tool']!.textDiff, undefined);
    assert.deepEqual(e.link!.expected, { kind: 'symlink', target: 'stamp' });
    assert.deepEqual(e.link!.actual, { kind: 'symlink', target: 'same' });
    assert.deepEqual(e.gone!.expected, { kind: 'file', size: 10, sha256: createHash('sha256').update('only here\n').digest('hex'), executable: false });
    assert.equal(e.thing!.expected!.kind, 'file');
    assert.equal(e.thing!.actual!.kind, 'directory');
    assert.equal(e.stamp!.expected!.size, 15);
    assert.notEqual(e.stamp!.expected!.sha256, e.stamp!.actual!.sha256);
  });

  it('shows a small text file line by line: both the old and the new line, with context and headers naming both sides', async () => {
    const lines = Array.from({ length: 20 }, (_, i) => `line ${i + 1}`);
    const changed = lines.map((l, i) => (i === 9 ? 'line ten, rebuilt' : l));
    const expected = tree({ 'notes.txt': `${lines.join('\n')}\n` });
    const actual = tree({ 'notes.txt': `${changed.join('\n')}\n` });
    const diff = await diffOutputs({ expected, actual, diffoscope: false });
    assert.equal(diff.entries.length, 1);
    assert.equal(
      diff.entries[0]!.textDiff,
      [
        '--- expected/notes.txt',
        '+++ actual/notes.txt',
        '@@ -7,7 +7,7 @@',
        ' line 7',
        ' line 8',
        ' line 9',
        '-line 10',
        '+line ten, rebuilt',
        ' line 11',
        ' line 12',
        ' line 13',
        '',
      ].join('\n'),
    );
  });

  it('gives separate hunks for distant changes, and marks a missing final newline', async () => {
    const expected = tree({ f: 'a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nend' });
    const actual = tree({ f: 'A\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nend\n' });
    const [entry] = (await diffOutputs({ expected, actual, diffoscope: false })).entries;
    assert.equal(
      entry!.textDiff,
      [
        '--- expected/f',
        '+++ actual/f',
        '@@ -1,4 +1,4 @@',
        '-a',
        '+A',
        ' b',
        ' c',
        ' d',
        '@@ -9,4 +9,4 @@',
        ' i',
        ' j',
        ' k',
        '-end',
        '\\ No newline at end of file',
        '+end',
        '',
      ].join('\n'),
    );
  });

  it('gives a binary file (a NUL byte, or not UTF-8) and a text file over the size limit hashes but no line diff', async () => {
    const expected = tree({ 'a.bin': Buffer.from([1, 0, 2]), 'latin1.txt': Buffer.from([0x63, 0x61, 0x66, 0xe9]), 'big.txt': 'x\n'.repeat(100) });
    const actual = tree({ 'a.bin': Buffer.from([1, 0, 3]), 'latin1.txt': Buffer.from([0x63, 0x61, 0x66, 0xe8]), 'big.txt': 'y\n'.repeat(100) });
    const diff = await diffOutputs({ expected, actual, diffoscope: false, maxTextBytes: 150 });
    assert.deepEqual(
      diff.entries.map((e) => [e.path, e.change, e.textDiff]),
      [
        ['a.bin', 'changed', undefined],
        ['big.txt', 'changed', undefined],
        ['latin1.txt', 'changed', undefined],
      ],
    );
    for (const entry of diff.entries) assert.match(entry.actual!.sha256!, /^[0-9a-f]{64}$/);
    // under the limit the same text file gets its diff
    const small = await diffOutputs({ expected, actual, diffoscope: false, maxTextBytes: 200 });
    assert.match(byPath(small.entries)['big.txt']!.textDiff!, /^-x$/m);
  });

  it('compares a single-file output as the path "", named after the output in its line diff and in the report', async () => {
    const dir = tree({ 'abc-hello.txt': 'hello\n', other: { 'abc-hello.txt': 'hello, world\n' } });
    const expected = join(dir, 'abc-hello.txt');
    const actual = join(dir, 'other', 'abc-hello.txt');
    const diff = await diffOutputs({ expected, actual, diffoscope: false });
    assert.deepEqual(
      diff.entries.map((e) => [e.path, e.change]),
      [['', 'changed']],
    );
    assert.match(diff.entries[0]!.textDiff!, /^--- expected\/abc-hello\.txt\n\+\+\+ actual\/abc-hello\.txt\n@@ -1 \+1 @@\n-hello\n\+hello, world\n$/);
    const storePath = '/nix/store/0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-hello.txt';
    const text = renderOutputDiff(storePath, diff);
    assert.match(text, /^changed {7}hello\.txt {2}6 B sha256:[0-9a-f]{64} -> 13 B sha256:[0-9a-f]{64}$/m);
  });

  it('compares a symlink output by its target, and finds nothing in equal trees', async () => {
    const dir = tree({ a: { link: '/nix/store/x' }, b: { link: '/nix/store/y' }, same1: { f: 'x' }, same2: { f: 'x' } });
    const links = await diffOutputs({ expected: join(dir, 'a'), actual: join(dir, 'b'), diffoscope: false });
    assert.deepEqual(links.entries, [
      { path: '', change: 'changed', expected: { kind: 'symlink', target: '/nix/store/x' }, actual: { kind: 'symlink', target: '/nix/store/y' } },
    ]);
    const same = await diffOutputs({ expected: join(dir, 'same1'), actual: join(dir, 'same2'), diffoscope: false });
    assert.deepEqual(same.entries, []);
    assert.deepEqual(same.summary, { added: 0, removed: 0, changed: 0 });
  });

  it('refuses a side that does not exist, naming it', async () => {
    const expected = tree({ f: 'x' });
    await assert.rejects(diffOutputs({ expected, actual: join(root, 'nowhere'), diffoscope: false }), (error: Error) => {
      assert.match(error.message, /the rebuilt copy of the output .*nowhere cannot be read \(ENOENT\)/);
      return true;
    });
  });

  it('says why when diffoscope is asked for by a path where it is not', async () => {
    const expected = tree({ f: 'x\n' });
    const actual = tree({ f: 'y\n' });
    const diff = await diffOutputs({ expected, actual, diffoscope: join(root, 'no-diffoscope') });
    assert.equal(diff.tool, 'listing');
    assert.match(diff.diffoscopeError!, /diffoscope not found at .*no-diffoscope/);
    assert.equal(diff.entries.length, 1);
    assert.match(renderOutputDiff('/nix/store/0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-out', diff), /diffoscope not found at/);
  });
});

describe('renderOutputDiff', () => {
  it('names the output, the summary, each entry on a line, then the line diffs; no colours', async () => {
    const expected = tree({ stamp: 'built at 10:00\n', gone: 'x', bin: { tool: { exec: 'run' } }, l: { link: 'stamp' } });
    const actual = tree({ stamp: 'built at 10:07\n', added: { file: 'y' }, bin: { tool: 'run' }, l: { link: 'gone' } });
    const output = '/nix/store/0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-hello-2.12';
    const text = renderOutputDiff(output, await diffOutputs({ expected, actual, diffoscope: false }));
    const lines = text.split('\n');
    assert.equal(lines[0], `${output}: the rebuilt copy differs from the coordinator's`);
    assert.equal(lines[1], '2 added, 1 removed, 3 changed');
    assert.match(text, /^added {9}added {2}directory$/m);
    assert.match(text, /^added {9}added\/file {2}1 B sha256:[0-9a-f]{64}$/m);
    assert.match(text, /^changed {7}bin\/tool {2}3 B sha256:([0-9a-f]{64}) executable -> 3 B sha256:\1$/m);
    assert.match(text, /^removed {7}gone {2}1 B sha256:[0-9a-f]{64}$/m);
    assert.match(text, /^changed {7}l {2}symlink to "stamp" -> symlink to "gone"$/m);
    assert.match(text, /^changed {7}stamp {2}15 B sha256:[0-9a-f]{64} -> 15 B sha256:[0-9a-f]{64}$/m);
    assert.match(text, /\n--- expected\/stamp\n\+\+\+ actual\/stamp\n@@ -1 \+1 @@\n-built at 10:00\n\+built at 10:07\n/);
    assert.doesNotMatch(text, /\x1b\[/);
  });
});

describe('diffOutputs with diffoscope', () => {
  const installed = onPath('diffoscope');
  it("adds diffoscope's text report to the listing", {
    skip: installed ? false : 'diffoscope is not on PATH (Debian: apt-get install diffoscope-minimal)',
  }, async () => {
    const expected = tree({ stamp: 'built at 10:00\n', same: 'x' });
    const actual = tree({ stamp: 'built at 10:07\n', same: 'x' });
    const diff = await diffOutputs({ expected, actual });
    assert.equal(diff.tool, 'diffoscope');
    assert.equal(diff.diffoscopeError, undefined);
    assert.match(diff.diffoscope!, /-built at 10:00\n.*\+built at 10:07/s);
    assert.doesNotMatch(diff.diffoscope!, /same/);
    assert.deepEqual(
      diff.entries.map((e) => e.path),
      ['stamp'],
    );
    const text = renderOutputDiff('/nix/store/0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-out', diff);
    assert.match(text, /diffoscope's report:\n--- /);
    // an executable bit alone: diffoscope ignores it, the listing names it
    const modeOnly = await diffOutputs({ expected: tree({ tool: { exec: 'run' } }), actual: tree({ tool: 'run' }) });
    assert.equal(modeOnly.tool, 'diffoscope');
    assert.equal(modeOnly.diffoscope, '');
    assert.deepEqual(
      modeOnly.entries.map((e) => [e.path, e.change]),
      [['tool', 'changed']],
    );
    assert.match(renderOutputDiff('/nix/store/0c5x4qvsz1zqlfq2k6w1ysf2zjmb8a9d-out', modeOnly), /diffoscope's report:\n\(no differences it could see\)\n$/);
  });
});
