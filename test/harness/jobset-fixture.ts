import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeBusyboxDir } from './nix-fixtures.js';
import { onProcessExit, removeTreeSync } from './process-cleanup.js';

/**
 * A generated jobset for evaluation tests: good busybox derivations in
 * nested sets, all depending on one common derivation, plus (optionally)
 * one attribute of every evaluation failure kind. Takes `{ salt ? "" }`.
 */
export interface JobsetFixture {
  file: string;
  /** good attributes entered with recurseForDerivations alone (dotted) */
  recursed: string[];
  /** good attributes in plain sets: only forceRecurse enters them */
  plain: string[];
  /** the failing attributes (dotted) -> words Nix's error must contain */
  failures: Record<string, string>;
  /** the one multi-output attribute (outputs foo, out) */
  multiOutput: string;
}

export interface JobsetFixtureOptions {
  /** top-level good attributes */
  top: number;
  /** good attributes in `pkgs` (recurseForDerivations) and in `pkgs.nested` */
  recursed: number;
  nested: number;
  /** good attributes in `plain` (a set without recurseForDerivations) */
  plain: number;
  withFailures: boolean;
}

export function jobsetFixture(options: JobsetFixtureOptions): JobsetFixture {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-jobset-'));
  onProcessExit(() => removeTreeSync(dir));
  writeBusyboxDir(dir);
  const recursed: string[] = [];
  const plain: string[] = [];
  const good = (name: string): string => `${name} = mk "${name}";`;
  const top = Array.from({ length: options.top }, (_, i) => `top-${i}`);
  const pkgs = Array.from({ length: options.recursed }, (_, i) => `p-${i}`);
  const nested = Array.from({ length: options.nested }, (_, i) => `n-${i}`);
  const plains = Array.from({ length: options.plain }, (_, i) => `q-${i}`);
  recursed.push('multi', ...top, ...pkgs.map((n) => `pkgs.${n}`), ...nested.map((n) => `pkgs.nested.${n}`));
  plain.push(...plains.map((n) => `plain.${n}`));
  const failures: Record<string, string> = options.withFailures
    ? {
        'broken.throws': 'throw-message',
        'broken.asserts': 'assertion',
        'broken.aborts': 'aborting-message',
        'broken.selfReference': 'infinite recursion',
        'broken.deepRecursion': 'stack overflow',
        'broken.notDerivation': 'not a derivation',
        'broken.memory': 'exceeded --eval-max-memory',
        // derivations whose WHNF is fine but whose drvPath fails: they fail a whole batch, which must split
        'pkgs.lateThrow': 'late-throw-message',
        'pkgs.lateAbort': 'late-abort-message',
      }
    : {};
  const brokenSet = options.withFailures
    ? `  broken = {
    recurseForDerivations = true;
    throws = throw "throw-message";
    asserts = assert salt == "never-this-salt"; mk "asserts";
    aborts = abort "aborting-message";
    selfReference = let x = x; in x;
    deepRecursion = let f = n: f (n + 1); in f 0;
    notDerivation = 42;
    memory = builtins.deepSeq (builtins.genList (i: "a string that takes room number \${toString i}") 5000000) (mk "memory");
  };
`
    : '';
  const late = options.withFailures
    ? `    lateThrow = mkWith "late-throw" (throw "late-throw-message");
    lateAbort = mkWith "late-abort" (abort "late-abort-message");
`
    : '';
  const text = `{ salt ? "" }:
let
  bb = builtins.path { path = ./busybox; name = "busybox"; };
  common = derivation {
    name = "jobset-common";
    system = builtins.currentSystem;
    builder = "\${bb}/bin/sh";
    args = [ "-c" "echo common \${salt} > $out" ];
  };
  mkWith = name: extra: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "\${bb}/bin/sh";
    args = [ "-c" ("echo " + name + " \${salt} \${common} > $out") extra ];
  };
  mk = name: mkWith name "";
in {
  multi = derivation {
    name = "jobset-multi";
    system = builtins.currentSystem;
    outputs = [ "foo" "out" ];
    builder = "\${bb}/bin/sh";
    args = [ "-c" "echo foo \${salt} \${common} > $foo; echo out > $out" ];
  };
${top.map((n) => `  ${good(n)}`).join('\n')}
  pkgs = {
    recurseForDerivations = true;
${pkgs.map((n) => `    ${good(n)}`).join('\n')}
${late}    nested = {
      recurseForDerivations = true;
${nested.map((n) => `      ${good(n)}`).join('\n')}
    };
  };
  plain = {
${plains.map((n) => `    ${good(n)}`).join('\n')}
  };
${brokenSet}}
`;
  const file = join(dir, 'jobset.nix');
  writeFileSync(file, text);
  return { file, recursed, plain, failures, multiOutput: 'multi' };
}

/** What one attribute of the scale jobset must come to. */
export type ScaleExpectation =
  | { kind: 'succeeded' }
  /** its own build fails */
  | { kind: 'failed' }
  /** an input's build fails: `dependency` is the failing derivation's name */
  | { kind: 'dependency-failed'; dependency: string }
  /** no derivation: the errorKind and words Nix's error must contain */
  | { kind: 'evaluation-failed'; errorKind: string; words: string };

export interface ScaleJobsetFixture {
  file: string;
  /** every attribute (dotted) and its expected result */
  expected: Map<string, ScaleExpectation>;
  /** derivations a build of the whole jobset runs (the shared DAG, the good attributes and the three failing builds) */
  builds: number;
  /** the bound the memory attribute exceeds (and a batch of good attributes stays under) */
  evalMaxMemoryMiB: number;
}

export interface ScaleJobsetOptions {
  /** attributes in all (2,000 for the issue's test and bench) */
  attributes: number;
  /** the shared layered DAG every good attribute builds on */
  layers: number;
  width: number;
  /** attributes per group set (`g-N`, each with recurseForDerivations) */
  groupSize?: number;
  /** with one attribute of every evaluation failure and three build failures; false: only good attributes */
  withFailures: boolean;
  /** written here (a fresh temporary directory by default) */
  dir?: string;
  /**
   * Evaluation work in each good attribute's derivation (a fold over a list
   * of this many numbers, forced only when the derivation is instantiated,
   * not when it is listed), as a real package set spends its evaluation on
   * the derivations' attributes; none by default.
   */
  evalWork?: number;
}

/**
 * The issue's jobset at scale: `attributes` attributes in groups over a
 * shared layered DAG (each good attribute depends on one node of its top
 * layer, so the DAG is built once for all of them), optionally with every
 * kind of evaluation failure (two of them, lateThrow and lateAbort, inside a
 * big group so that a large batch must split) and three build failures: one
 * shared derivation that is no attribute (five attributes on it become
 * dependency-failed) and two failing attributes with three dependents each.
 * Takes `{ salt ? "" }`.
 */
export function scaleJobsetFixture(options: ScaleJobsetOptions): ScaleJobsetFixture {
  const { layers, width } = options;
  const groupSize = options.groupSize ?? 100;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'nixfarm-jobset-scale-'));
  if (options.dir === undefined) onProcessExit(() => removeTreeSync(dir));
  writeBusyboxDir(dir);
  const expected = new Map<string, ScaleExpectation>();
  const sets = new Map<string, string[]>();
  const put = (set: string, name: string, value: string, expectation: ScaleExpectation): void => {
    sets.set(set, [...(sets.get(set) ?? []), `    ${name} = ${value};`]);
    expected.set(`${set}.${name}`, expectation);
  };
  let builds = layers * width;

  if (options.withFailures) {
    const evaluation = (errorKind: string, words: string): ScaleExpectation => ({ kind: 'evaluation-failed', errorKind, words });
    put('broken', 'throws', 'throw "throw-message"', evaluation('evaluation-error', 'throw-message'));
    put('broken', 'asserts', 'assert salt == "never-this-salt"; mk "asserts" ""', evaluation('evaluation-error', 'assertion'));
    put('broken', 'aborts', 'abort "aborting-message"', evaluation('evaluation-error', 'aborting-message'));
    put('broken', 'selfReference', 'let x = x; in x', evaluation('evaluation-error', 'infinite recursion'));
    put('broken', 'notDerivation', '42', evaluation('not-a-derivation', 'not a derivation'));
    put(
      'broken',
      'memory',
      'builtins.deepSeq (builtins.genList (i: "a string that takes room number ${toString i}") 5000000) (mk "memory" "")',
      evaluation('out-of-memory', 'exceeded --eval-max-memory'),
    );
    // fine to WHNF, failing only when instantiated: inside a big group, they make its batch split
    put('g-0', 'lateThrow', 'mk "late-throw" (throw "late-throw-message")', evaluation('evaluation-error', 'late-throw-message'));
    put('g-0', 'lateAbort', 'mk "late-abort" (abort "late-abort-message")', evaluation('evaluation-error', 'late-abort-message'));
    builds += 3;
    for (let j = 0; j < 5; j++)
      put('failing', `onBase-${j}`, `mk "on-base-${j}" "cat \${brokenBase} > $out"`, { kind: 'dependency-failed', dependency: 'broken-base' });
    for (let k = 0; k < 2; k++) {
      put('failing', `fails-${k}`, `fails ${k}`, { kind: 'failed' });
      for (let j = 0; j < 3; j++)
        put('failing', `on-${k}-${j}`, `mk "on-${k}-${j}" "cat \${fails ${k}} > $out"`, { kind: 'dependency-failed', dependency: `fails-${k}` });
    }
  }
  const good = options.attributes - expected.size;
  if (good < 1) throw new Error(`scaleJobsetFixture: ${options.attributes} attributes leave no room for good ones`);
  for (let i = 0; i < good; i++) {
    const top = `dag.node-${layers - 1}-${i % width}`;
    const work = options.evalWork === undefined ? '' : ` \${toString (work ${i})}`;
    put(`g-${Math.floor(i / groupSize)}`, `j-${i}`, `mk "j-${i}" "echo j-${i}${work} \${${top}} > $out"`, { kind: 'succeeded' });
  }
  builds += good;

  const dag: string[] = [];
  for (let k = 0; k < layers; k++) {
    for (let i = 0; i < width; i++) {
      const inputs = k === 0 ? [] : [...new Set([i, (i + 1) % width])].map((d) => `\${node-${k - 1}-${d}}`);
      dag.push(`    node-${k}-${i} = mk "node-${k}-${i}" "echo node-${k}-${i} \${salt} ${inputs.join(' ')} > $out";`);
    }
  }
  const text = `{ salt ? "" }:
let
  bb = builtins.path { path = ./busybox; name = "busybox"; };
  mk = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; args = [ "-c" script ]; };
  work = i: builtins.foldl' (a: b: a + b) i (builtins.genList (x: x) ${options.evalWork ?? 0});
  dag = rec {
${dag.join('\n')}
  };
  brokenBase = mk "broken-base" "echo broken \${salt}; exit 3";
  fails = k: mk "fails-\${toString k}" "echo fails \${salt}; exit 4";
in {
${[...sets].map(([name, lines]) => `  ${name} = {\n    recurseForDerivations = true;\n${lines.join('\n')}\n  };`).join('\n')}
}
`;
  const file = join(dir, 'jobset-scale.nix');
  writeFileSync(file, text);
  return { file, expected, builds, evalMaxMemoryMiB: 128 };
}
