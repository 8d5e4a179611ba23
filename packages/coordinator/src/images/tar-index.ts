import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';

const BLOCK = 512;

/** What a tar holds at its top: every entry's name, and the contents of the few entries asked for. */
export interface TarIndex {
  names: Set<string>;
  files: Map<string, Buffer>;
}

/** Pulls exact byte counts out of a stream of chunks without holding more than one chunk. */
class ChunkReader {
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly chunks: AsyncIterator<Buffer>) {}

  async read(n: number): Promise<Buffer | undefined> {
    while (this.buffered.length < n) {
      const next = await this.chunks.next();
      if (next.done === true) return undefined;
      this.buffered = Buffer.concat([this.buffered, next.value]);
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  async skip(n: number): Promise<boolean> {
    let left = n;
    while (left > this.buffered.length) {
      left -= this.buffered.length;
      const next = await this.chunks.next();
      if (next.done === true) return false;
      this.buffered = next.value;
    }
    this.buffered = this.buffered.subarray(left);
    return true;
  }
}

function text(header: Buffer, start: number, length: number): string {
  const field = header.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? field.length : end).toString('utf8');
}

/** Sizes over 8 GiB are base-256 (the high bit of the first byte set), as GNU tar writes them. */
function sizeOf(header: Buffer): number {
  if ((header[124]! & 0x80) !== 0) return header.subarray(125, 136).reduce((n, byte) => n * 256 + byte, 0);
  return Number.parseInt(text(header, 124, 12).trim() || '0', 8);
}

function checksumMatches(header: Buffer): boolean {
  const stored = Number.parseInt(text(header, 148, 8).trim(), 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  return stored === sum;
}

function normalise(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
}

/** A pax extended header's `path` record, if it has one. */
function paxPath(data: Buffer): string | undefined {
  for (const record of data.toString('utf8').split('\n')) {
    const match = /^\d+ path=(.*)$/.exec(record);
    if (match !== null) return match[1];
  }
  return undefined;
}

/**
 * Lists a tar file (plain or gzip-compressed), streaming: layers are skipped,
 * not read. Keeps the contents of the entries `wanted` names, up to `maxBytes`
 * each. Undefined: the file is not a tar (no valid first header).
 */
export async function readTarIndex(file: string, wanted: (name: string) => boolean, maxBytes = 4 * 1024 * 1024): Promise<TarIndex | undefined> {
  const handle = await open(file, 'r');
  const magic = Buffer.alloc(2);
  await handle.read(magic, 0, 2, 0);
  await handle.close();
  const raw = createReadStream(file);
  const stream = magic[0] === 0x1f && magic[1] === 0x8b ? raw.pipe(createGunzip()) : raw;
  const reader = new ChunkReader(stream[Symbol.asyncIterator]());
  const index: TarIndex = { names: new Set(), files: new Map() };
  let longName: string | undefined;
  try {
    for (let first = true; ; first = false) {
      const header = await reader.read(BLOCK);
      if (header === undefined || header.every((b) => b === 0)) return first ? undefined : index;
      if (!checksumMatches(header)) return first ? undefined : index;
      const size = sizeOf(header);
      const type = String.fromCharCode(header[156]!);
      // POSIX ustar ("ustar\0") has a name prefix at 345; GNU's old format ("ustar  ") keeps times there.
      const prefix = text(header, 257, 6) === 'ustar' ? text(header, 345, 155) : '';
      const name = normalise(longName ?? (prefix === '' ? text(header, 0, 100) : `${prefix}/${text(header, 0, 100)}`));
      longName = undefined;
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      if (type === 'x' || type === 'L') {
        const data = await reader.read(padded);
        if (data === undefined) return index;
        longName = type === 'x' ? paxPath(data.subarray(0, size)) : text(data, 0, size);
        continue;
      }
      index.names.add(name);
      if (size > 0 && size <= maxBytes && wanted(name)) {
        const data = await reader.read(padded);
        if (data === undefined) return index;
        index.files.set(name, Buffer.from(data.subarray(0, size)));
      } else if (!(await reader.skip(padded))) {
        return index;
      }
    }
  } catch {
    // A gzip stream that breaks off, or bytes that are no tar at all: what was read so far is what there is.
    return index.names.size === 0 ? undefined : index;
  } finally {
    raw.destroy();
  }
}
