import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertDerivationPath, assertStorePath, parseDerivation } from '@nixfarm/shared';
import { onProcessExit, removeTreeSync } from './process-cleanup.js';
import type { SimulatedMachine } from './simulated-machine.js';

/**
 * Test Nix expressions without nixpkgs: every derivation is a
 * builtins.derivation whose builder is a static busybox's sh, added to the
 * store from a folder next to the .nix file. Every file takes `{ salt ? "" }`
 * and puts the salt into each builder script, so a test that passes a fresh
 * salt gets derivations no store has seen before.
 */

/** Where the static busybox comes from (Debian's busybox-static). */
export const HOST_BUSYBOX = '/bin/busybox';

export interface FixtureOptions {
  /** directory for the .nix file (and its busybox/ folder); a per-process temp dir by default */
  dir?: string;
  /** the file's default salt (tests usually pass `--argstr salt` instead) */
  salt?: string;
  /** every derivation's system; `builtins.currentSystem` by default */
  system?: string;
  /** every derivation's requiredSystemFeatures */
  requiredSystemFeatures?: readonly string[];
  /** each builder sleeps this long first (seconds, may be fractional): for tests that need builds to overlap */
  sleepSeconds?: number;
}

export interface Fixture {
  /** absolute path of the .nix file */
  file: string;
  /** attributes to build (`-A`); building them builds every derivation of the fixture */
  attrs: string[];
  /** derivations in the closure of attrs (busybox is a source, not a derivation) */
  expectedDrvCount: number;
}

export interface LayeredDagOptions extends FixtureOptions {
  layers: number;
  width: number;
}

export interface LayeredDag extends Fixture {
  /** node attribute (and derivation) names by layer: nodes[k][i] = `node-k-i` */
  nodes: string[][];
  /** derivation name of the top-level `all` */
  allName: string;
}

export interface FailingBranch extends Fixture {
  /** derivation (and attribute) names of each role */
  names: { failing: string; dependent: string; independent: string; all: string };
  /** the failing builder's exit code */
  exitCode: number;
  /** lines the failing builder prints before failing (stdout and stderr), for log assertions */
  logLines: string[];
}

export interface MultiOutput extends Fixture {
  names: { producer: string; consumer: string };
  /** the producer's outputs, default first */
  outputs: ['foo', 'out'];
}

export interface Chain extends Fixture {
  /** link names from the bottom (`link-0`, no inputs) to the top (`all` aliases it) */
  links: string[];
}

let defaultDir: string | undefined;

function fixtureDir(options: FixtureOptions): string {
  if (options.dir !== undefined) {
    mkdirSync(options.dir, { recursive: true });
    writeBusyboxDir(options.dir);
    return options.dir;
  }
  if (defaultDir === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'nixfarm-fixtures-'));
    defaultDir = dir;
    onProcessExit(() => removeTreeSync(dir));
    writeBusyboxDir(dir);
  }
  return defaultDir;
}

/**
 * dir/busybox/bin/busybox (a copy of the static busybox) and bin/sh -> busybox:
 * busybox picks its applet from argv[0], so `${bb}/bin/sh` is a shell.
 * Idempotent.
 */
export function writeBusyboxDir(dir: string): string {
  const bin = join(dir, 'busybox', 'bin');
  mkdirSync(bin, { recursive: true });
  const target = join(bin, 'busybox');
  if (!existsSync(target)) {
    if (!existsSync(HOST_BUSYBOX)) throw new Error(`${HOST_BUSYBOX} is missing: install Debian's busybox-static (scripts/ensure-machine.mjs does)`);
    copyFileSync(HOST_BUSYBOX, target);
  }
  const sh = join(bin, 'sh');
  let hasSh = false;
  try {
    hasSh = lstatSync(sh).isSymbolicLink();
  } catch {
    hasSh = false;
  }
  if (!hasSh) symlinkSync('busybox', sh);
  return join(dir, 'busybox');
}

/** A Nix string literal (the generated files never splice unquoted text). */
function nixString(value: string): string {
  return JSON.stringify(value).replace(/\$\{/g, '\\${');
}

/** Shared preamble: the busybox source and a `mk` helper building one derivation with the fixture's system and features. */
function preamble(options: FixtureOptions): string {
  const system = options.system === undefined ? 'builtins.currentSystem' : nixString(options.system);
  const features = (options.requiredSystemFeatures ?? []).map(nixString).join(' ');
  const seconds = options.sleepSeconds;
  if (seconds !== undefined && !(Number.isFinite(seconds) && seconds >= 0)) throw new Error(`sleepSeconds must be a number >= 0, not ${seconds}`);
  const sleep = seconds === undefined ? '' : `\${bb}/bin/busybox sleep ${seconds}; `;
  return `{ salt ? ${nixString(options.salt ?? '')} }:
let
  bb = builtins.path { path = ./busybox; name = "busybox"; };
  # the salt, single-quoted for sh: it makes every derivation new per salt
  quoted = "'" + builtins.replaceStrings [ "'" ] [ "'\\\\''" ] salt + "'";
  mk = { name, script, outputs ? [ "out" ] }: derivation {
    inherit name outputs;
    system = ${system};
    builder = "\${bb}/bin/sh";
    args = [ "-c" ("${sleep}echo " + name + " salt=" + quoted + "; " + script) ];${features === '' ? '' : `\n    requiredSystemFeatures = [ ${features} ];`}
  };
in
`;
}

/** Writes the file under a name derived from its content, so parallel tests never overwrite each other's fixture. */
function writeFixture(dir: string, kind: string, text: string): string {
  const file = join(dir, `${kind}-${createHash('sha256').update(text).digest('hex').slice(0, 12)}.nix`);
  if (!existsSync(file)) writeFileSync(file, text);
  return file;
}

function dependencies(layer: number, index: number, width: number): number[] {
  // Every node of layer k-1 is depended on by node i of layer k (so all of
  // them are in the closure of `all`); two out of three also take a second,
  // shifted input, which makes the graph a DAG with shared inputs, not a tree.
  if (layer === 0) return [];
  const deps = [index];
  if (width === 1 || index % 3 === 2) return deps;
  // an offset in 1..width-1 that varies by layer: never the node itself
  deps.push((index + 1 + (layer % (width - 1))) % width);
  return deps;
}

/** layers × width nodes, each depending on 1-2 nodes of the layer below, plus `all` over the top layer. */
export function layeredDag(options: LayeredDagOptions): LayeredDag {
  const { layers, width } = options;
  if (!Number.isInteger(layers) || layers < 1 || !Number.isInteger(width) || width < 1) throw new Error('layeredDag needs layers >= 1 and width >= 1');
  const dir = fixtureDir(options);
  const nodes: string[][] = [];
  const lines: string[] = [];
  for (let k = 0; k < layers; k++) {
    const layer: string[] = [];
    for (let i = 0; i < width; i++) {
      const name = `node-${k}-${i}`;
      layer.push(name);
      // each output names its inputs' outputs: a real runtime reference, without the size growing per layer
      const refs = dependencies(k, i, width)
        .map((d) => `echo \${node-${k - 1}-${d}} >> $out; `)
        .join('');
      // node-k-i is one Nix identifier ('-' is an identifier character), so no quoting is needed
      lines.push(`  ${name} = mk { name = "${name}"; script = "echo ${name} > $out; ${refs}"; };`);
    }
    nodes.push(layer);
  }
  const last = nodes[layers - 1] ?? [];
  const allName = 'layered-dag-all';
  const allScript = last.map((n) => `echo \${${n}} >> $out; `).join('');
  lines.push(`  all = mk { name = "${allName}"; script = "echo all > $out; ${allScript}"; };`);
  const text = `${preamble(options)}rec {\n${lines.join('\n')}\n}\n`;
  const file = writeFixture(dir, `layered-dag-${layers}x${width}`, text);
  return { file, attrs: ['all'], expectedDrvCount: layers * width + 1, nodes, allName };
}

/** n derivations, each depending on the one before; `all` is the top one. */
export function chain(n: number, options: FixtureOptions = {}): Chain {
  if (!Number.isInteger(n) || n < 1) throw new Error('chain needs n >= 1');
  const dir = fixtureDir(options);
  const links: string[] = [];
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = `link-${i}`;
    links.push(name);
    const ref = i === 0 ? '' : `echo \${link-${i - 1}} >> $out; `;
    lines.push(`  ${name} = mk { name = "${name}"; script = "echo ${name} > $out; ${ref}"; };`);
  }
  lines.push(`  all = link-${n - 1};`);
  const text = `${preamble(options)}rec {\n${lines.join('\n')}\n}\n`;
  return { file: writeFixture(dir, `chain-${n}`, text), attrs: ['all'], expectedDrvCount: n, links };
}

/** A producer with outputs foo (the default, being first) and out, and a consumer that uses only `.foo`. */
export function multiOutput(options: FixtureOptions = {}): MultiOutput {
  const dir = fixtureDir(options);
  const text = `${preamble(options)}rec {
  producer = mk { name = "multi-producer"; outputs = [ "foo" "out" ]; script = "echo foo-output > $foo; echo out-output > $out"; };
  consumer = mk { name = "multi-consumer"; script = "echo \${producer.foo} > $out; \${bb}/bin/busybox cat \${producer.foo} >> $out"; };
  all = consumer;
}
`;
  return {
    file: writeFixture(dir, 'multi-output', text),
    attrs: ['all'],
    expectedDrvCount: 2,
    names: { producer: 'multi-producer', consumer: 'multi-consumer' },
    outputs: ['foo', 'out'],
  };
}

/**
 * `all` depends on a builder that fails (`exit 3` after a few log lines), on a
 * dependent of it (which must end dependency-failed) and on an independent
 * derivation that succeeds.
 */
export function failingBranch(options: FixtureOptions = {}): FailingBranch {
  const dir = fixtureDir(options);
  const logLines = ['failing-step: starting', 'failing-step: doing work', 'failing-step: about to fail', 'error: failing-step broke on purpose'];
  const failScript = `echo ${logLines[0]}; echo ${logLines[1]}; echo ${logLines[2]}; echo ${logLines[3]} >&2; exit 3`;
  const text = `${preamble(options)}rec {
  failing = mk { name = "failing-step"; script = ${nixString(failScript)}; };
  dependent = mk { name = "after-failing-step"; script = "echo \${failing} > $out"; };
  independent = mk { name = "independent-step"; script = "echo independent > $out"; };
  all = mk { name = "failing-branch-all"; script = "echo \${failing} \${dependent} \${independent} > $out"; };
}
`;
  return {
    file: writeFixture(dir, 'failing-branch', text),
    attrs: ['all'],
    expectedDrvCount: 4,
    names: { failing: 'failing-step', dependent: 'after-failing-step', independent: 'independent-step', all: 'failing-branch-all' },
    exitCode: 3,
    logLines,
  };
}

export interface CyclicOutputs extends Fixture {
  /** the derivation's name */
  name: string;
  outputs: ['a', 'b', 'c'];
}

/**
 * Nix's own tests/multiple-outputs.nix `cyclic`: outputs a, b and c each hold
 * the next one's path (a -> b -> c -> a), a reference cycle Nix refuses after
 * the builder ran. The derivation's own fault, the same on every machine.
 */
export function cyclicOutputs(options: FixtureOptions = {}): CyclicOutputs {
  const dir = fixtureDir(options);
  const text = `${preamble(options)}rec {
  cyclic = mk { name = "cyclic-outputs"; outputs = [ "a" "b" "c" ]; script = "\${bb}/bin/busybox mkdir $a $b $c; echo $b > $a/foo; echo $c > $b/bar; echo $a > $c/baz"; };
  all = cyclic;
}
`;
  return { file: writeFixture(dir, 'cyclic-outputs', text), attrs: ['all'], expectedDrvCount: 1, name: 'cyclic-outputs', outputs: ['a', 'b', 'c'] };
}

export interface TickingWorkload extends Fixture {
  /** derivation names of the tickers (each logs `NAME: tick K` every half second), the one that fails, and the top */
  names: { tickers: string[]; broken: string; all: string };
  /** the line the broken builder prints last before it fails */
  brokenLine: string;
}

/**
 * Builds that take a while and talk while they do, for watching a farm:
 * `tickers` derivations that each log a line every half second for
 * `ticks` half-seconds, `all` over them, and `broken`, which logs and fails
 * after a second. Build attrs `all` and `broken` together.
 */
export function tickingWorkload(options: FixtureOptions & { tickers: number; ticks: number }): TickingWorkload {
  const dir = fixtureDir(options);
  const tickers = Array.from({ length: options.tickers }, (_, i) => `ticker-${i}`);
  const brokenLine = 'broken-step: giving up on purpose';
  // Written as Nix strings directly: ${bb} must interpolate (nixString would escape it); $i and $((...)) stay the shell's.
  const lines = tickers.map(
    (name) =>
      `  ${name} = mk { name = "${name}"; script = "i=0; while [ $i -lt ${options.ticks} ]; do i=$((i+1)); echo ${name}: tick $i; \${bb}/bin/busybox sleep 0.5; done; echo ${name} > $out"; };`,
  );
  lines.push(`  broken = mk { name = "broken-step"; script = "echo broken-step: starting; \${bb}/bin/busybox sleep 1; echo ${brokenLine} >&2; exit 4"; };`);
  lines.push(`  all = mk { name = "ticking-all"; script = "${tickers.map((t) => `echo \${${t}} >> $out; `).join('')}"; };`);
  const text = `${preamble(options)}rec {\n${lines.join('\n')}\n}\n`;
  return {
    file: writeFixture(dir, `ticking-${options.tickers}x${options.ticks}`, text),
    attrs: ['all', 'broken'],
    expectedDrvCount: options.tickers + 2,
    names: { tickers, broken: 'broken-step', all: 'ticking-all' },
    brokenLine,
  };
}

/**
 * A .nix file in a fresh temp dir (removed at exit) with the busybox source,
 * `{ salt ? "" }:` and `mk = name: script: derivation {...}` running the
 * script under busybox sh; `lets` adds bindings, `attrs` is the attribute
 * set's body. For tests whose derivations print chosen lines.
 */
export function scriptedFixture(kind: string, attrs: string, lets = ''): string {
  const dir = mkdtempSync(join(tmpdir(), `nixfarm-${kind}-`));
  onProcessExit(() => removeTreeSync(dir));
  writeBusyboxDir(dir);
  const file = join(dir, `${kind}.nix`);
  writeFileSync(
    file,
    `{ salt ? "" }:
let
  bb = builtins.path { path = ./busybox; name = "busybox"; };
  mk = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; args = [ "-c" script ]; };
${lets}in {
${attrs}}
`,
  );
  return file;
}

/** A fresh salt: derivations instantiated with it are new to every store. */
export function freshSalt(): string {
  return randomBytes(8).toString('hex');
}

export interface NixCallOptions {
  salt?: string;
  /** run inside this machine instead of on the host */
  machine?: SimulatedMachine;
  /** extra `--option NAME VALUE` pairs */
  options?: ReadonlyArray<readonly [string, string]>;
}

async function nix(command: string, args: string[], options: NixCallOptions): Promise<string> {
  const optionArgs = [['substituters', ''] as const, ...(options.options ?? [])].flatMap(([k, v]) => ['--option', k, v]);
  const fullArgs = [...args, ...optionArgs];
  if (options.machine !== undefined) return options.machine.runChecked(command, fullArgs);
  return new Promise((resolve, reject) => {
    const child = spawn(command, fullArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${command} ${fullArgs.join(' ')} exited with ${code}:\n${stderr}`));
    });
  });
}

/** `nix-instantiate FILE -A ATTR... --argstr salt SALT`: the .drv paths, one per attribute (an output selector `!foo` is dropped). */
export async function nixInstantiate(file: string, attrs: readonly string[], options: NixCallOptions = {}): Promise<string[]> {
  const args = [file, ...attrs.flatMap((a) => ['-A', a])];
  if (options.salt !== undefined) args.push('--argstr', 'salt', options.salt);
  const out = await nix('nix-instantiate', args, options);
  return out
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => assertDerivationPath(l.replace(/!.*$/, '')));
}

/**
 * The output paths of a derivation, from the store that holds it
 * (`nix-store -q --outputs`), ordered by output name as in the .drv
 * (`foo` before `out`). Nix itself prints them in store-path order, which
 * changes with every salt.
 */
export async function outputPathsOf(drvPath: string, options: Omit<NixCallOptions, 'salt'> = {}): Promise<string[]> {
  const byName = await outputsOf(drvPath, options);
  return Object.keys(byName)
    .sort()
    .map((name) => byName[name]!);
}

/** Output name -> store path of a derivation, checked against `nix-store -q --outputs` of the store that holds it. */
export async function outputsOf(drvPath: string, options: Omit<NixCallOptions, 'salt'> = {}): Promise<Record<string, string>> {
  assertDerivationPath(drvPath);
  const out = await nix('nix-store', ['-q', '--outputs', drvPath], options);
  const listed = new Set(
    out
      .split('\n')
      .filter((l) => l.length > 0)
      .map(assertStorePath),
  );
  const file = options.machine === undefined ? drvPath : options.machine.hostPathOf(drvPath);
  const outputs = parseDerivation(drvPath, readFileSync(file, 'utf8')).outputs;
  const named = Object.values(outputs);
  if (named.length !== listed.size || !named.every((p) => listed.has(p))) {
    throw new Error(`outputs of ${drvPath} in its .drv (${named.join(' ')}) differ from nix-store -q --outputs (${[...listed].join(' ')})`);
  }
  return outputs;
}

/** Every derivation in the closure of these .drv files (`nix-store -qR`, .drv only), including themselves. */
export async function derivationClosure(drvPaths: readonly string[], options: Omit<NixCallOptions, 'salt'> = {}): Promise<string[]> {
  drvPaths.forEach(assertDerivationPath);
  const out = await nix('nix-store', ['-qR', ...drvPaths], options);
  return out
    .split('\n')
    .filter((l) => l.endsWith('.drv'))
    .map(assertDerivationPath);
}

/** The outputs of these derivations that the host's store (the coordinator's) lacks: [] once the farm built every one and copied it back. */
export async function invalidOutputsOf(drvPaths: readonly string[]): Promise<string[]> {
  const outputs = (await Promise.all(drvPaths.map((d) => outputPathsOf(d)))).flat();
  const invalid = await nix('nix-store', ['--check-validity', '--print-invalid', ...outputs], {});
  return invalid.split('\n').filter((l) => l.length > 0);
}
