import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ServeConnectionError, WireReader, WireWriter, readNarRegularFile } from '@nixfarm/shared';

function readerOf(...chunks: Buffer[]): { reader: WireReader; stream: PassThrough } {
  const stream = new PassThrough();
  const reader = new WireReader(stream, 'test peer');
  for (const c of chunks) stream.write(c);
  return { reader, stream };
}

describe("Nix's wire format", () => {
  it('writes integers little-endian and strings padded to 8 bytes', () => {
    const bytes = new WireWriter().u64(1).string('abc').strings(['', 'x']).toBuffer();
    assert.equal(
      bytes.toString('hex'),
      ['0100000000000000', '0300000000000000', '6162630000000000', '0200000000000000', '0000000000000000', '0100000000000000', '7800000000000000'].join(''),
    );
  });

  it('reads back what it writes, even when the bytes arrive one at a time', async () => {
    const bytes = new WireWriter().u64(0x390c9deb).string('/nix/store/abc').strings(['a', 'bb', 'ccccccccc']).u64(7).toBuffer();
    const { reader, stream } = readerOf();
    const reads = (async () => [await reader.readU64(), await reader.readString(), await reader.readStrings(), await reader.readU64()])();
    for (const b of bytes) {
      stream.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    assert.deepEqual(await reads, [0x390c9deb, '/nix/store/abc', ['a', 'bb', 'ccccccccc'], 7]);
  });

  it('fails every pending read with a clear error when the peer hangs up', async () => {
    const { reader, stream } = readerOf(Buffer.from([1, 0, 0]));
    const pending = reader.readU64();
    stream.end();
    await assert.rejects(
      pending,
      (error: unknown) => error instanceof ServeConnectionError && /test peer closed the connection/.test(error.message) && error.retryable,
    );
    await assert.rejects(reader.readU64(), ServeConnectionError);
  });

  it('refuses an absurd string length instead of waiting for gigabytes (a desynchronised stream)', async () => {
    const { reader } = readerOf(new WireWriter().u64(2 ** 40).toBuffer());
    await assert.rejects(reader.readString(), /out of sync/);
  });

  it('relays raw bytes to another stream until told to stop, counting them, then decodes again', async () => {
    const { reader, stream } = readerOf(Buffer.from('head'));
    const target = new PassThrough();
    const relayed: Buffer[] = [];
    target.on('data', (c: Buffer) => relayed.push(c));
    reader.startRelay(target);
    stream.write(Buffer.from('-tail'));
    await new Promise((r) => setImmediate(r));
    assert.equal(reader.stopRelay(), 'head-tail'.length, 'it counts what it relayed (buffered bytes too), for the copy metrics');
    stream.write(new WireWriter().u64(42).toBuffer());
    assert.equal(Buffer.concat(relayed).toString(), 'head-tail');
    assert.equal(await reader.readU64(), 42);
  });

  it('reads the file inside a NAR written by nix-store --dump, and refuses a directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nixfarm-nar-'));
    try {
      const text = 'Derive([("out","/nix/store/x","","")],[],[],"x86_64-linux","/bin/sh",[],[])\n'.repeat(3);
      writeFileSync(join(dir, 'file.drv'), text);
      const nar = execFileSync('nix-store', ['--dump', join(dir, 'file.drv')]);
      const { reader } = readerOf(nar, new WireWriter().u64(99).toBuffer());
      assert.equal((await readNarRegularFile(reader, 'file.drv')).toString(), text);
      assert.equal(await reader.readU64(), 99, 'the stream stays in sync after the NAR');

      const dirNar = execFileSync('nix-store', ['--dump', dir]);
      const { reader: r2 } = readerOf(dirNar, new WireWriter().u64(5).toBuffer());
      await assert.rejects(readNarRegularFile(r2, 'the dir'), /not a regular file/);
      assert.equal(await r2.readU64(), 5, 'a refused NAR is still read to its end');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
