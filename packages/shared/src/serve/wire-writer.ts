/**
 * Nix's wire format (worker and serve protocols): unsigned 64-bit little-endian
 * integers, and byte strings as a length, the bytes, then zero padding to a
 * multiple of 8. Messages are built whole and written with one write().
 */
export class WireWriter {
  private readonly parts: Buffer[] = [];

  u64(value: number | bigint | boolean): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(typeof value === 'bigint' ? value : BigInt(typeof value === 'boolean' ? Number(value) : value));
    this.parts.push(b);
    return this;
  }

  string(value: string | Buffer): this {
    const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    this.u64(bytes.length);
    this.parts.push(bytes);
    const pad = (8 - (bytes.length % 8)) % 8;
    if (pad > 0) this.parts.push(Buffer.alloc(pad));
    return this;
  }

  strings(values: Iterable<string>): this {
    const list = [...values];
    this.u64(list.length);
    for (const v of list) this.string(v);
    return this;
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}
