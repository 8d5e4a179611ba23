import { ServeConnectionError, type WireReader } from './wire-reader.js';

/** Largest single file read out of a NAR into memory (derivations are small; this is a guard). */
const MAX_FILE = 256 * 1024 * 1024;

/**
 * Reads one NAR (Nix ARchive) from the wire, as `nix-store --dump` and the
 * serve protocol's dump command write it, and returns the contents when its
 * root is a regular file. Other roots are consumed (so the stream stays in
 * sync) and rejected.
 */
export async function readNarRegularFile(reader: WireReader, what: string): Promise<Buffer> {
  await expect(reader, 'nix-archive-1', what);
  const root = await readNode(reader, what, true);
  if (root === undefined) throw new ServeConnectionError(`${what} is not a regular file`);
  return root;
}

async function expect(reader: WireReader, token: string, what: string): Promise<void> {
  const got = await reader.readString(1024);
  if (got !== token) throw new ServeConnectionError(`malformed NAR for ${what}: expected ${JSON.stringify(token)}, got ${JSON.stringify(got.slice(0, 40))}`);
}

async function readNode(reader: WireReader, what: string, keep: boolean): Promise<Buffer | undefined> {
  await expect(reader, '(', what);
  await expect(reader, 'type', what);
  const type = await reader.readString(1024);
  switch (type) {
    case 'regular': {
      let tag = await reader.readString(1024);
      if (tag === 'executable') {
        await expect(reader, '', what);
        tag = await reader.readString(1024);
      }
      if (tag !== 'contents') throw new ServeConnectionError(`malformed NAR for ${what}: expected "contents", got ${JSON.stringify(tag)}`);
      const contents = await reader.readBuffer(keep ? MAX_FILE : Number.MAX_SAFE_INTEGER);
      await expect(reader, ')', what);
      return keep ? contents : undefined;
    }
    case 'symlink':
      await expect(reader, 'target', what);
      await reader.readString();
      await expect(reader, ')', what);
      return undefined;
    case 'directory':
      for (;;) {
        const tag = await reader.readString(1024);
        if (tag === ')') return undefined;
        if (tag !== 'entry') throw new ServeConnectionError(`malformed NAR for ${what}: expected "entry", got ${JSON.stringify(tag)}`);
        await expect(reader, '(', what);
        await expect(reader, 'name', what);
        await reader.readString(4096);
        await expect(reader, 'node', what);
        await readNode(reader, what, false);
        await expect(reader, ')', what);
      }
    default:
      throw new ServeConnectionError(`malformed NAR for ${what}: unknown node type ${JSON.stringify(type.slice(0, 40))}`);
  }
}
