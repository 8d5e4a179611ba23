import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { FarmMetrics } from '@nixfarm/coordinator';

/** The README is the front door: what does not fit here belongs in docs/. */
const README_MAX_LINES = 250;

/** The checkout: the nearest directory above this file whose package.json is nixfarm's (the compiled test runs from test/dist). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'nixfarm') return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('no nixfarm checkout above the test file');
    dir = parent;
  }
}

const ROOT = repoRoot();
const README = join(ROOT, 'README.md');
const DOCS = join(ROOT, 'docs');
const PAGES = [
  README,
  ...readdirSync(DOCS)
    .filter((f) => f.endsWith('.md'))
    .map((f) => join(DOCS, f)),
];

/** The text outside fenced code blocks (their lines blanked, so line numbers hold). */
function prose(markdown: string): string {
  let fenced = false;
  return markdown
    .split('\n')
    .map((line) => {
      if (/^\s*(```|~~~)/.test(line)) {
        fenced = !fenced;
        return '';
      }
      return fenced ? '' : line;
    })
    .join('\n');
}

/** Link targets written as [text](target) or ![alt](target), outside code. */
function linkTargets(markdown: string): string[] {
  const text = prose(markdown).replace(/`[^`\n]*`/g, '');
  return [...text.matchAll(/!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]!);
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens; repeats get -1, -2. */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of prose(markdown).split('\n')) {
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading === null) continue;
    const base = heading[1]!
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** The lines of one `## heading` section, up to the next heading of that level. */
function section(markdown: string, heading: string): string | undefined {
  const lines = markdown.split('\n');
  const start = lines.indexOf(heading);
  if (start < 0) return undefined;
  const end = lines.findIndex((line, i) => i > start && line.startsWith('## '));
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n');
}

/** Long options named in the first cell of a section's table rows. */
function tableOptions(sectionText: string): Set<string> {
  const options = new Set<string>();
  for (const line of prose(sectionText).split('\n')) {
    const cell = /^\|([^|]*)\|/.exec(line)?.[1];
    if (cell === undefined) continue;
    for (const m of cell.matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)) options.add(m[0]);
  }
  return options;
}

interface CliCommand {
  name(): string;
  options: ReadonlyArray<{ long?: string }>;
}

/** The CLI as its own --help sees it (the compiled package, loaded by path: it has no index). */
async function cliCommands(): Promise<CliCommand[]> {
  const main = (await import(pathToFileURL(join(ROOT, 'packages', 'cli', 'dist', 'main.js')).href)) as { program: () => { commands: readonly CliCommand[] } };
  return [...main.program().commands];
}

const read = (path: string) => readFileSync(path, 'utf8');
const shown = (path: string) => relative(ROOT, path);

describe('docs', () => {
  it(`keeps README.md within ${README_MAX_LINES} lines`, () => {
    const lines = read(README).replace(/\n$/, '').split('\n').length;
    assert.ok(lines <= README_MAX_LINES, `README.md has ${lines} lines; move detail into docs/ (at most ${README_MAX_LINES})`);
  });

  it('has relative links that point to existing files and headings', () => {
    const broken: string[] = [];
    for (const page of PAGES) {
      for (const target of linkTargets(read(page))) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: and the like
        const [path = '', fragment] = target.split('#', 2);
        const file = path === '' ? page : resolve(dirname(page), decodeURI(path));
        if (!existsSync(file)) {
          broken.push(`${shown(page)}: ${target}: no such file`);
          continue;
        }
        if (fragment === undefined || !file.endsWith('.md') || statSync(file).isDirectory()) continue;
        if (!headingAnchors(read(file)).has(fragment)) broken.push(`${shown(page)}: ${target}: no heading #${fragment} in ${shown(file)}`);
      }
    }
    assert.deepEqual(broken, []);
  });

  it('shows every command in the README with an example', async () => {
    const readme = read(README);
    for (const command of await cliCommands()) {
      const name = command.name();
      const row = readme.split('\n').find((line) => line.startsWith('|') && line.includes(`(docs/cli.md#nixfarm-${name})`));
      assert.ok(row !== undefined, `README.md's command table has no row for nixfarm ${name}`);
      assert.match(row, new RegExp(`\`nixfarm ${name}[ \`]`), `README.md's row for nixfarm ${name} has no example`);
    }
  });

  it('documents each command with exactly the options the CLI has', async () => {
    const reference = read(join(DOCS, 'cli.md'));
    const commands = await cliCommands();
    const documented = [...reference.matchAll(/^## nixfarm (\S+)$/gm)].map((m) => m[1]!);
    assert.deepEqual([...documented].sort(), commands.map((c) => c.name()).sort(), 'the sections of docs/cli.md are not the commands of the CLI');
    for (const command of commands) {
      const text = section(reference, `## nixfarm ${command.name()}`)!;
      const real = command.options.map((o) => o.long).filter((long): long is string => long !== undefined);
      assert.deepEqual([...tableOptions(text)].sort(), [...real].sort(), `docs/cli.md's table for nixfarm ${command.name()}`);
    }
  });

  it('names in docs/metrics.md exactly the metrics the coordinator exports', () => {
    const exported = new FarmMetrics().registry
      .getMetricsAsArray()
      .map((m) => m.name)
      .filter((name) => !name.startsWith('nixfarm_coordinator_'));
    const named = new Set([...prose(read(join(DOCS, 'metrics.md'))).matchAll(/`(nixfarm_[a-z_]+)`/g)].map((m) => m[1]!));
    assert.deepEqual(
      exported.filter((name) => !named.has(name)),
      [],
      'exported but not in docs/metrics.md',
    );
    assert.deepEqual(
      [...named].filter((name) => !exported.includes(name)),
      [],
      'in docs/metrics.md but not exported',
    );
  });
});
