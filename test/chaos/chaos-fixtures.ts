import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeBusyboxDir } from '../harness/nix-fixtures.js';
import { onProcessExit, removeTreeSync } from '../harness/process-cleanup.js';

/**
 * Nix expressions the chaos scenarios build: busybox builders as in the
 * harness fixtures, each run salted so every store sees new derivations.
 */
export interface ChaosFixture {
  file: string;
  /** the attribute to build */
  attr: string;
  /** derivations a run of `attr` builds */
  derivations: number;
}

let root: string | undefined;

function fixtureDir(kind: string): string {
  if (root === undefined) {
    const made = mkdtempSync(join(tmpdir(), 'nixfarm-chaos-'));
    root = made;
    onProcessExit(() => removeTreeSync(made));
  }
  const dir = mkdtempSync(join(root, `${kind}-`));
  writeBusyboxDir(dir);
  return dir;
}

const PREAMBLE = `{ salt ? "" }:
let
  bb = builtins.path { path = ./busybox; name = "busybox"; };
  mk = { name, script, local ? false }: builtins.derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "\${bb}/bin/sh";
    preferLocalBuild = local;
    args = [ "-c" ("echo " + name + " " + salt + "; " + script) ];
  };
in
`;

export interface SleepyDagOptions {
  layers: number;
  width: number;
  /** each builder sleeps this long, so that a fault lands while builds run */
  sleepSeconds: number;
  /** the first node of every odd layer is a preferLocalBuild derivation, built by the coordinator itself */
  withLocalBuilds?: boolean;
}

/** layers × width sleeping derivations, each depending on two of the layer below, under one `all`. */
export function sleepyDag(options: SleepyDagOptions): ChaosFixture {
  const { layers, width, sleepSeconds } = options;
  const lines: string[] = [];
  for (let k = 0; k < layers; k++) {
    for (let i = 0; i < width; i++) {
      const inputs = k === 0 ? [] : [...new Set([i, (i + 1) % width])].map((d) => `\${n-${k - 1}-${d}}`);
      const local = options.withLocalBuilds === true && k % 2 === 1 && i === 0;
      lines.push(
        `  n-${k}-${i} = mk { name = "n-${k}-${i}"; ${local ? 'local = true; ' : ''}script = "\${bb}/bin/busybox sleep ${sleepSeconds}; echo n-${k}-${i} ${inputs.join(' ')} > $out"; };`,
      );
    }
  }
  const top = Array.from({ length: width }, (_, i) => `\${n-${layers - 1}-${i}}`).join(' ');
  lines.push(`  all = mk { name = "sleepy-all"; script = "echo ${top} > $out"; };`);
  const dir = fixtureDir('sleepy-dag');
  const file = join(dir, 'default.nix');
  writeFileSync(file, `${PREAMBLE}rec {\n${lines.join('\n')}\n}\n`);
  return { file, attr: 'all', derivations: layers * width + 1 };
}

export interface BulkyCopies {
  /** copy-in: a derivation whose input is a large source file (only the coordinator has it) */
  copyIn: ChaosFixture;
  /** copy-out: a derivation whose output is large */
  copyOut: ChaosFixture;
}

/**
 * Builds whose copies take long enough to be cut in the middle: a large
 * random input file (a source, so only the coordinator's store has it) and a
 * large output (zeros: the same bytes on every build, so a rebuild elsewhere
 * gives the same NAR).
 */
export function bulkyCopies(sizeMiB: number): BulkyCopies {
  const dir = fixtureDir('bulky');
  mkdirSync(dir, { recursive: true });
  // new bytes per fixture: the input path is new to every store
  const blob = join(dir, 'blob.bin');
  const chunks: Buffer[] = [];
  for (let i = 0; i < sizeMiB; i++) chunks.push(randomBytes(1024 * 1024));
  writeFileSync(blob, Buffer.concat(chunks));
  const file = join(dir, 'default.nix');
  writeFileSync(
    file,
    `${PREAMBLE}rec {
  blob = builtins.path { path = ./blob.bin; name = "chaos-blob"; };
  reader = mk { name = "blob-reader"; script = "\${bb}/bin/busybox wc -c \${blob} > $out"; };
  writer = mk { name = "zeros-writer"; script = "\${bb}/bin/busybox dd if=/dev/zero of=$out bs=1048576 count=${sizeMiB}"; };
}
`,
  );
  return { copyIn: { file, attr: 'reader', derivations: 1 }, copyOut: { file, attr: 'writer', derivations: 1 } };
}
