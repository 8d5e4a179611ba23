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
