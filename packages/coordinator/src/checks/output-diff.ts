import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { execa } from 'execa';
import { ValidationError, isStorePath, parseStorePath, type Logger } from '@nixfarm/shared';
import { unifiedDiff } from './unified-diff.js';

/** One side of a differing path, as a NAR can hold it: a regular file, a directory or a symlink. */
export interface FileSide {
  kind: 'file' | 'directory' | 'symlink';
  /** bytes, for a regular file */
  size?: number;
  /** hex SHA-256 of the contents, for a regular file */
  sha256?: string;
  /** for a symlink: where it points, as written (never followed) */
  target?: string;
  /** for a regular file: Nix's one permission bit */
  executable?: boolean;
}

export interface DiffEntry {
  /** relative to the output, '/'-separated; '' for a single-file (or symlink) output itself */
  path: string;
  /** added: only in the rebuilt copy; removed: only in the coordinator's; type-changed: file vs directory vs symlink */
  change: 'added' | 'removed' | 'changed' | 'type-changed';
  expected?: FileSide;
  actual?: FileSide;
  /** for a changed text file small enough: `diff -u` of the two, naming expected/<path> and actual/<path> */
  textDiff?: string;
}

export interface OutputDiff {
  /** diffoscope when it ran and its report is in `diffoscope`; the built-in listing only otherwise */
  tool: 'diffoscope' | 'listing';
  /** every differing path, sorted by path */
  entries: DiffEntry[];
  /** type-changed paths count as changed */
  summary: { added: number; removed: number; changed: number };
  /** diffoscope's text report, when it ran */
  diffoscope?: string;
  /** diffoscope's report was cut at its size cap */
  truncated?: boolean;
  /** why diffoscope was asked for but gave no report (not found, timed out, failed) */
  diffoscopeError?: string;
}

export interface DiffOutputsOptions {
  /** the coordinator's copy of the output (a store path: a directory, a single file or a symlink) */
  expected: string;
  /** the rebuilt copy, restored outside the store */
  actual: string;
  /** text files up to this size (both sides) get a line diff; 64 KiB by default */
  maxTextBytes?: number;
  /** false: never run diffoscope; a string: its path; by default `diffoscope` from PATH when installed */
  diffoscope?: boolean | string;
  /** diffoscope's time limit; 120 s by default */
  timeoutMs?: number;
  logger?: Logger;
}

const DEFAULT_MAX_TEXT_BYTES = 64 * 1024;
const DEFAULT_TIMEOUT_MS = 120_000;
/** diffoscope's --max-text-report-size: a report a person reads, and that travels through the API */
const DIFFOSCOPE_REPORT_BYTES = 1024 * 1024;
/** what diffoscope prints where it stopped at --max-text-report-size */
const DIFFOSCOPE_TRUNCATION_MARK = 'Max text output size reached.';

/** Paths of one side, relative to its root ('' for the root itself). */
type Tree = Map<string, { side: FileSide; absolute: string }>;

async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Walks a tree with lstat only: a symlink is recorded with its target, never followed. */
async function readTree(root: string): Promise<Tree> {
  const tree: Tree = new Map();
  const visit = async (absolute: string, rel: string): Promise<void> => {
    const stats = await lstat(absolute);
    if (stats.isSymbolicLink()) {
      tree.set(rel, { side: { kind: 'symlink', target: await readlink(absolute) }, absolute });
    } else if (stats.isDirectory()) {
      tree.set(rel, { side: { kind: 'directory' }, absolute });
      for (const name of await readdir(absolute)) await visit(join(absolute, name), rel === '' ? name : `${rel}/${name}`);
    } else if (stats.isFile()) {
      const side: FileSide = { kind: 'file', size: stats.size, sha256: await sha256Of(absolute), executable: (stats.mode & 0o111) !== 0 };
      tree.set(rel, { side, absolute });
    } else {
      // a NAR (and so a store path) holds nothing else: this is not an output
      throw new ValidationError(`${absolute} is neither a regular file, a directory nor a symlink: an output holds only those`);
    }
  };
  await visit(root, '');
  return tree;
}

function sameSide(a: FileSide, b: FileSide): boolean {
  return a.kind === b.kind && a.sha256 === b.sha256 && a.target === b.target && a.executable === b.executable;
}

/** A name for the output itself: a store path's name, else the last component. */
function outputName(path: string): string {
  return isStorePath(path) ? parseStorePath(path).name : basename(path);
}

/** The contents as text, or undefined for a binary file: any NUL byte, or bytes that are not UTF-8. */
function asText(bytes: Buffer): string | undefined {
  if (bytes.includes(0)) return undefined;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

async function textDiffOf(rel: string, name: string, expected: string, actual: string): Promise<string | undefined> {
  const [old, now] = await Promise.all([readFile(expected), readFile(actual)]);
  const oldText = asText(old);
  const newText = asText(now);
  if (oldText === undefined || newText === undefined) return undefined;
  const shown = rel === '' ? name : rel;
  return unifiedDiff(oldText, newText, { oldName: `expected/${shown}`, newName: `actual/${shown}` });
}

/** The built-in listing: every path that differs between the two trees, sorted by path. */
async function listDifferences(expectedRoot: string, actualRoot: string, maxTextBytes: number): Promise<DiffEntry[]> {
  const [expected, actual] = await Promise.all([readTree(expectedRoot), readTree(actualRoot)]);
  const name = outputName(expectedRoot);
  const paths = [...new Set([...expected.keys(), ...actual.keys()])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const entries: DiffEntry[] = [];
  for (const path of paths) {
    const e = expected.get(path);
    const a = actual.get(path);
    if (e === undefined) entries.push({ path, change: 'added', actual: a!.side });
    else if (a === undefined) entries.push({ path, change: 'removed', expected: e.side });
    else if (e.side.kind !== a.side.kind) entries.push({ path, change: 'type-changed', expected: e.side, actual: a.side });
    else if (!sameSide(e.side, a.side)) {
      const entry: DiffEntry = { path, change: 'changed', expected: e.side, actual: a.side };
      const small = e.side.kind === 'file' && e.side.size! <= maxTextBytes && a.side.size! <= maxTextBytes;
      // same contents, other executable bit: nothing to show line by line
      if (small && e.side.sha256 !== a.side.sha256) {
        const textDiff = await textDiffOf(path, name, e.absolute, a.absolute);
        if (textDiff !== undefined) entry.textDiff = textDiff;
      }
      entries.push(entry);
    }
  }
  return entries;
}

async function mustExist(path: string, what: string): Promise<void> {
  try {
    await lstat(path);
  } catch (error) {
    throw new ValidationError(`${what} ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)}): nothing to compare it with`);
  }
}

type DiffoscopeReport = { text: string; truncated: boolean } | { error: string } | undefined;

/** diffoscope's text report, undefined when it is not installed (and was not asked for by path). */
async function runDiffoscope(program: string, explicit: boolean, expected: string, actual: string, timeoutMs: number): Promise<DiffoscopeReport> {
  const args = [
    '--text',
    '-',
    '--no-progress',
    '--text-color',
    'never',
    '--exclude-directory-metadata=yes',
    '--max-text-report-size',
    String(DIFFOSCOPE_REPORT_BYTES),
    '--',
    expected,
    actual,
  ];
  const result = await execa(program, args, {
    reject: false,
    stdin: 'ignore',
    timeout: timeoutMs,
    // a backstop: diffoscope writes somewhat past its own cap
    maxBuffer: 2 * DIFFOSCOPE_REPORT_BYTES,
    encoding: 'utf8',
  });
  const errno = (result as { code?: string }).code;
  if (errno === 'ENOENT') return explicit ? { error: `diffoscope not found at ${program}: give the path of an installed diffoscope` } : undefined;
  if (result.timedOut) return { error: `diffoscope did not finish within ${Math.round(timeoutMs / 1000)} s; the listing below is complete` };
  // 0: no differences it could see; 1: differences (its report)
  if ((result.exitCode === 0 || result.exitCode === 1) && !result.isMaxBuffer) {
    return { text: result.stdout, truncated: result.stdout.includes(DIFFOSCOPE_TRUNCATION_MARK) };
  }
  if (result.isMaxBuffer) return { text: result.stdout, truncated: true };
  const why = result.exitCode === undefined ? result.shortMessage : `exited with code ${result.exitCode}`;
  return { error: `diffoscope ${why}: ${result.stderr.trim().split('\n').slice(-5).join('\n')}`.trim() };
}

/**
 * How a rebuilt output differs from the coordinator's copy: diffoscope's
 * report when it is installed, and always the built-in listing of every
 * differing path (with hashes, symlink targets and line diffs of small text
 * files), which needs nothing but Node.
 */
export async function diffOutputs(options: DiffOutputsOptions): Promise<OutputDiff> {
  await mustExist(options.expected, "the coordinator's copy of the output");
  await mustExist(options.actual, 'the rebuilt copy of the output');
  const maxTextBytes = options.maxTextBytes ?? DEFAULT_MAX_TEXT_BYTES;
  const program = options.diffoscope === false ? undefined : typeof options.diffoscope === 'string' ? options.diffoscope : 'diffoscope';
  const [entries, report] = await Promise.all([
    listDifferences(options.expected, options.actual, maxTextBytes),
    program === undefined
      ? undefined
      : runDiffoscope(program, typeof options.diffoscope === 'string', options.expected, options.actual, options.timeoutMs ?? DEFAULT_TIMEOUT_MS),
  ]);
  const summary = {
    added: entries.filter((e) => e.change === 'added').length,
    removed: entries.filter((e) => e.change === 'removed').length,
    changed: entries.filter((e) => e.change === 'changed' || e.change === 'type-changed').length,
  };
  if (report !== undefined && 'error' in report) {
    options.logger?.warn({ expected: options.expected, actual: options.actual }, report.error);
    return { tool: 'listing', entries, summary, diffoscopeError: report.error };
  }
  if (report === undefined) return { tool: 'listing', entries, summary };
  return { tool: 'diffoscope', entries, summary, diffoscope: report.text, ...(report.truncated ? { truncated: true } : {}) };
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function formatSide(side: FileSide | undefined): string {
  if (side === undefined) return '(none)';
  switch (side.kind) {
    case 'directory':
      return 'directory';
    case 'symlink':
      return `symlink to ${JSON.stringify(side.target)}`;
    case 'file':
      return `${formatBytes(side.size ?? 0)} sha256:${side.sha256}${side.executable ? ' executable' : ''}`;
  }
}

const CHANGE_WIDTH = 'type-changed'.length + 2;

/** The plain-text report a user reads (`nixfarm diff`): no colours, one line per differing path, then the line diffs, then diffoscope's report. */
export function renderOutputDiff(outputPath: string, diff: OutputDiff): string {
  const name = outputName(outputPath);
  const { added, removed, changed } = diff.summary;
  const lines = [`${outputPath}: the rebuilt copy differs from the coordinator's`, `${added} added, ${removed} removed, ${changed} changed`];
  if (diff.entries.length === 0) lines.push('(no path differs in contents, type, symlink target or executable bit)');
  lines.push('');
  for (const entry of diff.entries) {
    const path = entry.path === '' ? name : entry.path;
    const sides =
      entry.change === 'added'
        ? formatSide(entry.actual)
        : entry.change === 'removed'
          ? formatSide(entry.expected)
          : `${formatSide(entry.expected)} -> ${formatSide(entry.actual)}`;
    lines.push(`${entry.change.padEnd(CHANGE_WIDTH)}${path}  ${sides}`);
  }
  let text = `${lines.join('\n')}\n`;
  for (const entry of diff.entries) if (entry.textDiff !== undefined) text += `\n${entry.textDiff}`;
  if (diff.diffoscope !== undefined) {
    // it ignores permissions here (--exclude-directory-metadata): an executable bit alone leaves its report empty
    const report = diff.diffoscope === '' ? '(no differences it could see)\n' : diff.diffoscope;
    text += `\ndiffoscope's report${diff.truncated ? ' (cut at its size limit)' : ''}:\n${report}`;
    if (!text.endsWith('\n')) text += '\n';
  }
  if (diff.diffoscopeError !== undefined) text += `\n${diff.diffoscopeError}\n`;
  return text;
}
