import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { DerivationView } from '@nixfarm/shared';
import { runIdOf } from '../harness/build-timeline.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { freshSalt, nixInstantiate, outputPathsOf, writeBusyboxDir } from '../harness/nix-fixtures.js';
import { onProcessExit, removeTreeSync } from '../harness/process-cleanup.js';

const MIB = 1024 * 1024;
/** 16 MiB of one repeated line: zlib shrinks it a thousandfold, so the bytes on the wire tell whether compression was on */
const OUTPUT_BYTES = 16 * MIB;
const LINE = 'nixfarm copies this line compressed\n';

/** A compressible output built on one worker (feature zp) and used by a derivation on the other (zc): it travels out and in. */
function fixture(): string {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-copy-compression-'));
  onProcessExit(() => removeTreeSync(dir));
  writeBusyboxDir(dir);
  const file = join(dir, 'compressible.nix');
  writeFileSync(
    file,
    `{ salt ? "" }:
let
  bb = builtins.path { path = ./busybox; name = "busybox"; };
  mk = name: features: script: derivation { inherit name; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; args = [ "-c" script ]; requiredSystemFeatures = features; };
in rec {
  text = mk "compressible-text-\${salt}" [ "zp" ] "\${bb}/bin/busybox yes '${LINE.trim()}' | \${bb}/bin/busybox head -c ${OUTPUT_BYTES} > $out";
  use = mk "compressible-use-\${salt}" [ "zc" ] "\${bb}/bin/busybox wc -c < \${text} > $out";
}
`,
  );
  return file;
}

/** nix-store on the host (the coordinator's store); throws with its stderr on a non-zero exit. */
function hostNixStore(args: readonly string[]): string {
  return execFileSync('nix-store', args, { encoding: 'utf8', timeout: 60_000 });
}

describe('--copy-compression zlib (real farm, both workers behind a relay that counts the bytes on the wire)', () => {
  const farm = farmForSuite({
    workers: [
      { name: 'z-producer', features: ['zp'], viaProxy: true, extraArgs: ['--copy-compression', 'zlib'] },
      { name: 'z-consumer', features: ['zc'], viaProxy: true, extraArgs: ['--copy-compression', 'zlib'] },
    ],
  });

  it('copies an output out of one worker and into the other compressed; both copies are valid and whole', async () => {
    const file = fixture();
    const salt = freshSalt();
    const producer = farm.workers.get('z-producer')!;
    const consumer = farm.workers.get('z-consumer')!;
    const before = { up: producer.link!.bytes.up, down: consumer.link!.bytes.down };

    const result = await farm.build([file, '-A', 'use', '--argstr', 'salt', salt], { timeoutMs: 120_000 });
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runIdOf(result.stderr)}/derivations`);
    const where = Object.fromEntries(derivations.map((d) => [d.name.replace(/-[0-9a-f]+$/, ''), d.worker]));
    assert.deepEqual(where, { 'compressible-text': 'z-producer', 'compressible-use': 'z-consumer' });

    const [textDrv, useDrv] = await nixInstantiate(file, ['text', 'use'], { salt });
    const [text] = await outputPathsOf(textDrv!);
    const [use] = await outputPathsOf(useDrv!);
    // The coordinator's store (the host's): both outputs valid, their contents match their recorded hashes, and are what was built.
    hostNixStore(['--verify-path', text!, use!]);
    const copied = readFileSync(text!);
    assert.equal(copied.length, OUTPUT_BYTES);
    assert.equal(copied.subarray(0, LINE.length).toString(), LINE);
    assert.equal(readFileSync(use!, 'utf8').trim(), String(OUTPUT_BYTES));
    // The consumer's store got the producer's output by the compressed copy-in: valid, same NAR hash as the coordinator's.
    assert.deepEqual([...(await consumer.machine.isValid([text!]))], [text]);
    await consumer.machine.runChecked('nix-store', ['--verify-path', text!]);
    const hashThere = (await consumer.machine.runChecked('nix-store', ['-q', '--hash', text!])).trim();
    const hashHere = hostNixStore(['-q', '--hash', text!]).trim();
    assert.equal(hashThere, hashHere);

    // Compression was in effect both ways: each copy of the 16 MiB NAR took a small fraction of it on the wire.
    const narSize = Number(hostNixStore(['-q', '--size', text!]).trim());
    assert.ok(narSize > OUTPUT_BYTES, `NAR size ${narSize}`);
    const out = producer.link!.bytes.up - before.up;
    const into = consumer.link!.bytes.down - before.down;
    process.stderr.write(`NAR ${narSize} bytes; on the wire: copy out ${out} bytes, copy in ${into} bytes (with the inputs)\n`);
    assert.ok(out < narSize / 8, `copy out put ${out} bytes on the wire for a ${narSize}-byte NAR: not compressed`);
    assert.ok(into < narSize / 8, `copy in put ${into} bytes on the wire for a ${narSize}-byte NAR: not compressed`);
  });
});
