import type { Readable, Writable } from 'node:stream';
import { InfrastructureError } from '../errors.js';

/** The peer hung up or sent something that is not the protocol: the connection is unusable from here on. */
export class ServeConnectionError extends InfrastructureError {
  constructor(message: string, cause?: unknown) {
    super('serve-connection-failed', message, cause);
  }
}

/** Longest string the reader accepts: store paths, error messages and derivation fields, never NAR contents. */
const MAX_STRING = 64 * 1024 * 1024;

interface Waiter {
  need: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

/**
 * Reads Nix's wire format from a stream. Besides decoding it can relay raw
 * bytes to another stream (an export from one store piped into an import on
 * another) without holding them, with back-pressure.
 */
export class WireReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: Waiter | undefined;
  private failure: Error | undefined;
  private relayTarget: Writable | undefined;
  /** bytes relayed since startRelay(): what a copy moved, for the metrics */
  private relayed = 0;
  private readonly failureListeners = new Set<(error: Error) => void>();

  constructor(
    private readonly source: Readable,
    /** names the peer in error messages, e.g. "nix-store --serve on coordinator" */
    private readonly peer: string,
    /** what the peer last wrote to stderr, appended to errors */
    private readonly stderrTail: () => string = () => '',
  ) {
    source.on('data', (chunk: Buffer) => this.onData(chunk));
    source.on('end', () => this.fail(new ServeConnectionError(`${this.peer} closed the connection${this.tail()}`)));
    source.on('error', (error) => this.fail(new ServeConnectionError(`${this.peer}: ${error.message}${this.tail()}`, error)));
  }

  private tail(): string {
    const text = this.stderrTail().trim();
    return text.length > 0 ? `: ${text}` : '';
  }

  /** Rejects every current and future read, e.g. when the peer process exits. */
  fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
    for (const listener of this.failureListeners) listener(error);
    this.failureListeners.clear();
  }

  /** Calls `listener` when the connection fails (at once if it already has); returns an unsubscribe function. */
  onFailure(listener: (error: Error) => void): () => void {
    if (this.failure !== undefined) {
      listener(this.failure);
      return () => undefined;
    }
    this.failureListeners.add(listener);
    return () => this.failureListeners.delete(listener);
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  private onData(chunk: Buffer): void {
    const target = this.relayTarget;
    if (target !== undefined) {
      this.relayed += chunk.length;
      if (!target.write(chunk)) {
        this.source.pause();
        target.once('drain', () => this.source.resume());
      }
      return;
    }
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const waiter = this.waiter;
    if (waiter !== undefined && this.buffered >= waiter.need) {
      this.waiter = undefined;
      waiter.resolve();
    }
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out;
  }

  async readBytes(n: number): Promise<Buffer> {
    if (this.buffered < n) {
      if (this.failure !== undefined) throw this.failure;
      await new Promise<void>((resolve, reject) => {
        this.waiter = { need: n, resolve, reject };
      });
    }
    return this.take(n);
  }

  async readU64(): Promise<number> {
    const b = await this.readBytes(8);
    const value = b.readBigUInt64LE();
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ServeConnectionError(`${this.peer} sent an integer out of range (${value})`);
    return Number(value);
  }

  async readBuffer(max = MAX_STRING): Promise<Buffer> {
    const length = await this.readU64();
    if (length > max) throw new ServeConnectionError(`${this.peer} sent a string of ${length} bytes (at most ${max} expected): the stream is out of sync`);
    const padded = length + ((8 - (length % 8)) % 8);
    const bytes = await this.readBytes(padded);
    return bytes.subarray(0, length);
  }

  async readString(max = MAX_STRING): Promise<string> {
    return (await this.readBuffer(max)).toString('utf8');
  }

  async readStrings(): Promise<string[]> {
    const count = await this.readU64();
    const out: string[] = [];
    for (let i = 0; i < count; i++) out.push(await this.readString());
    return out;
  }

  /**
   * From now on every byte from the peer goes to `target` until stopRelay():
   * the caller knows from the other side (the importer's reply) when the
   * relayed stream is complete.
   */
  startRelay(target: Writable): void {
    if (this.relayTarget !== undefined) throw new Error(`${this.peer}: already relaying`);
    for (const chunk of this.chunks) target.write(chunk);
    this.relayed = this.buffered;
    this.chunks = [];
    this.buffered = 0;
    this.relayTarget = target;
  }

  /** Ends the relay; returns how many bytes it passed on. */
  stopRelay(): number {
    this.relayTarget = undefined;
    if (this.source.isPaused()) this.source.resume();
    const relayed = this.relayed;
    this.relayed = 0;
    return relayed;
  }
}
