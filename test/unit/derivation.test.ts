import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DerivationParseError, InvalidStorePathError, parseDerivation } from '@nixfarm/shared';
import { chain, failingBranch, freshSalt, multiOutput, nixInstantiate } from '../harness/nix-fixtures.js';

// A multi-output .drv exactly as Nix 2.8 wrote it for the multiOutput fixture.
const PRODUCER_PATH = '/nix/store/jm40sxvxfnvxl4s7v78x9fwsfwcgr2gg-multi-producer.drv';
const PRODUCER_TEXT =
  'Derive([("foo","/nix/store/8n43yx46103plimzfixnvis0nqybzjvl-multi-producer-foo","",""),("out","/nix/store/sh9081jfhcf2g2fw00r4i4qrb52j8n2k-multi-producer","","")],' +
  '[],["/nix/store/ap5lw0pk87zllpr8psdiqgxx50yqpp1h-busybox"],"x86_64-linux","/nix/store/ap5lw0pk87zllpr8psdiqgxx50yqpp1h-busybox/bin/sh",' +
  '["-c","echo multi-producer salt=\'54f81cedb7d66709\'; echo foo-output > $foo; echo out-output > $out"],' +
  '[("builder","/nix/store/ap5lw0pk87zllpr8psdiqgxx50yqpp1h-busybox/bin/sh"),("foo","/nix/store/8n43yx46103plimzfixnvis0nqybzjvl-multi-producer-foo"),' +
  '("name","multi-producer"),("out","/nix/store/sh9081jfhcf2g2fw00r4i4qrb52j8n2k-multi-producer"),("outputs","foo out"),("system","x86_64-linux")])';

const readDrv = (path: string) => parseDerivation(path, readFileSync(path, 'utf8'));

describe('ATerm derivation parser', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'nixfarm-drv-test-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('parses a multi-output derivation written by Nix', () => {
    const drv = parseDerivation(PRODUCER_PATH, PRODUCER_TEXT);
    assert.equal(drv.name, 'multi-producer');
    assert.deepEqual(drv.outputs, {
      foo: '/nix/store/8n43yx46103plimzfixnvis0nqybzjvl-multi-producer-foo',
      out: '/nix/store/sh9081jfhcf2g2fw00r4i4qrb52j8n2k-multi-producer',
    });
    assert.deepEqual(drv.inputDrvs, {});
    assert.deepEqual(drv.inputSrcs, ['/nix/store/ap5lw0pk87zllpr8psdiqgxx50yqpp1h-busybox']);
    assert.equal(drv.system, 'x86_64-linux');
    assert.equal(drv.builder, '/nix/store/ap5lw0pk87zllpr8psdiqgxx50yqpp1h-busybox/bin/sh');
    assert.equal(drv.env.outputs, 'foo out');
    assert.deepEqual(drv.requiredSystemFeatures, []);
    assert.equal(drv.preferLocalBuild, false);
  });

  it('reads a real .drv from nix-instantiate: inputs, the used output, system and features', async () => {
    const fixture = multiOutput({ system: 'x86_64-darwin', requiredSystemFeatures: ['kvm', 'big-parallel', 'kvm'] });
    const [consumerPath] = await nixInstantiate(fixture.file, ['consumer'], { salt: freshSalt() });
    assert.ok(consumerPath);
    const consumer = readDrv(consumerPath);
    assert.equal(consumer.name, 'multi-consumer');
    assert.equal(consumer.system, 'x86_64-darwin');
    assert.deepEqual(consumer.requiredSystemFeatures, ['big-parallel', 'kvm'], 'deduplicated and sorted');
    assert.deepEqual(Object.keys(consumer.outputs), ['out']);
    const inputs = Object.entries(consumer.inputDrvs);
    assert.equal(inputs.length, 1);
    const [producerPath, used] = inputs[0]!;
    assert.deepEqual(used, ['foo'], 'the consumer uses only the foo output');
    assert.equal(consumer.inputSrcs.length, 1);
    assert.match(consumer.inputSrcs[0]!, /-busybox$/);

    const producer = readDrv(producerPath);
    assert.deepEqual(Object.keys(producer.outputs).sort(), ['foo', 'out']);
    assert.match(producer.outputs.foo!, /-multi-producer-foo$/);
    assert.match(producer.outputs.out!, /-multi-producer$/);
    assert.deepEqual(producer.inputDrvs, {});
  });

  it('follows a chain through inputDrvs', async () => {
    const fixture = chain(3);
    const [top] = await nixInstantiate(fixture.file, fixture.attrs, { salt: freshSalt() });
    const seen: string[] = [];
    let path: string | undefined = top;
    while (path !== undefined) {
      const drv = readDrv(path);
      seen.push(drv.name);
      assert.equal(drv.system, process.arch === 'x64' ? 'x86_64-linux' : drv.system);
      const inputs = Object.keys(drv.inputDrvs);
      assert.ok(inputs.length <= 1);
      path = inputs[0];
    }
    assert.deepEqual(seen, ['link-2', 'link-1', 'link-0']);
  });

  it('unescapes strings: quotes, backslashes, newlines, tabs', async () => {
    const file = join(scratch, 'escapes.nix');
    writeFileSync(
      file,
      `{ salt ? "" }: derivation {
  name = "escapes"; system = "x86_64-linux"; builder = "/bin/sh"; inherit salt;
  note = "quote \\" backslash \\\\ newline \\n tab \\t dollar \\\${x} end";
  preferLocalBuild = true;
  requiredSystemFeatures = [ "nixos-test" ];
}
`,
    );
    const [path] = await nixInstantiate(file, [], { salt: freshSalt() });
    assert.ok(path);
    const drv = readDrv(path);
    assert.equal(drv.env.note, 'quote " backslash \\ newline \n tab \t dollar ${x} end');
    assert.equal(drv.preferLocalBuild, true);
    assert.deepEqual(drv.requiredSystemFeatures, ['nixos-test']);
  });

  it('parses every derivation of the failing-branch fixture', async () => {
    const fixture = failingBranch();
    const paths = await nixInstantiate(fixture.file, ['failing', 'dependent', 'independent', 'all'], { salt: freshSalt() });
    const names = paths.map((p) => readDrv(p).name);
    assert.deepEqual(names, [fixture.names.failing, fixture.names.dependent, fixture.names.independent, fixture.names.all]);
    const all = readDrv(paths[3]!);
    assert.deepEqual(Object.keys(all.inputDrvs).sort(), paths.slice(0, 3).sort());
  });

  it('rejects garbage with DerivationParseError', () => {
    for (const text of [
      '',
      'garbage',
      'Derive(',
      'Derive([],[],[],"x86_64-linux","/bin/sh",[],[])',
      `${PRODUCER_TEXT} trailing`,
      PRODUCER_TEXT.slice(0, -1),
      PRODUCER_TEXT.replace('Derive(', 'Derive ('),
      PRODUCER_TEXT.replace('"foo out"', '"foo out'),
      '{"outputs":{}}',
    ]) {
      assert.throws(
        () => parseDerivation(PRODUCER_PATH, text),
        (err: unknown) => err instanceof DerivationParseError && err.drvPath === PRODUCER_PATH,
        JSON.stringify(text.slice(0, 60)),
      );
    }
  });

  it('rejects store paths that are not store paths, wherever they appear', () => {
    assert.throws(() => parseDerivation('/tmp/x.drv', PRODUCER_TEXT), InvalidStorePathError);
    assert.throws(() => parseDerivation(PRODUCER_PATH.replace('.drv', ''), PRODUCER_TEXT), InvalidStorePathError);
    const evilOutput = PRODUCER_TEXT.replace(
      '/nix/store/8n43yx46103plimzfixnvis0nqybzjvl-multi-producer-foo","",""',
      '/nix/store/8n43yx46103plimzfixnvis0nqybzjvl-x;rm -rf /","",""',
    );
    assert.throws(() => parseDerivation(PRODUCER_PATH, evilOutput), InvalidStorePathError);
    const evilSrc = PRODUCER_TEXT.replace('["/nix/store/ap5lw0pk87zllpr8psdiqgxx50yqpp1h-busybox"]', '["/etc/passwd"]');
    assert.throws(() => parseDerivation(PRODUCER_PATH, evilSrc), InvalidStorePathError);
    const evilInput = PRODUCER_TEXT.replace('],[],["/nix/store/ap5', '],[("/nix/store/$(id).drv",["out"])],["/nix/store/ap5');
    assert.throws(() => parseDerivation(PRODUCER_PATH, evilInput), InvalidStorePathError);
  });
});
