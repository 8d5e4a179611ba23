import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface TcpProxyOptions {
  /** where connections are relayed to (the coordinator's SSH endpoint) */
  targetPort: number;
  targetHost?: string;
  /** a slow link: at most this many bytes per second in each direction (token bucket over all connections); default unlimited */
  bytesPerSecond?: number;
}

/** Bytes relayed since the proxy started (or since the last arm): up = client to target, down = target to client. */
export interface Traffic {
  up: number;
  down: number;
}

export interface CutRule {
  /** cut once this many bytes flowed in this direction since the rule was armed */
  direction: keyof Traffic;
  bytes: number;
}

/** The bucket holds this many seconds' worth of credit: a line's burst is short (10 ms: 125 kB at 100 Mbit/s). */
const BURST_SECONDS = 0.01;

/**
 * One direction of a throttled link: chunks wait in order until the token
 * bucket (refilled at `rate` bytes per second, at most BURST_SECONDS' worth)
 * has credit; the sending socket is paused meanwhile, so TCP's own
 * back-pressure reaches the sender as it would on a slow line. When either
 * side closes, what the bucket still holds is dropped with the connection.
 */
class Throttle {
  private tokens = 0;
  private last = performance.now();
  private readonly queue: Array<{ chunk: Buffer; to: Socket; from: Socket }> = [];
  private timer: NodeJS.Timeout | undefined;
  /** senders paused until the queue is empty */
  private readonly held = new Set<Socket>();

  constructor(private readonly rate: number) {}

  send(chunk: Buffer, to: Socket, from: Socket): void {
    this.queue.push({ chunk, to, from });
    from.pause();
    this.held.add(from);
    this.pump();
  }

  clear(): void {
    this.queue.length = 0;
    this.held.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private pump(): void {
    if (this.timer !== undefined) return;
    const now = performance.now();
    this.tokens = Math.min(this.rate * BURST_SECONDS, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    // Credit may go negative by one chunk: the average rate is exact, the burst one chunk.
    while (this.queue.length > 0 && this.tokens > 0) {
      const { chunk, to } = this.queue.shift()!;
      this.tokens -= chunk.length;
      if (!to.destroyed) to.write(chunk);
    }
    if (this.queue.length === 0) {
      for (const s of this.held) if (!s.destroyed) s.resume();
      this.held.clear();
      return;
    }
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.pump();
      },
      Math.max(1, Math.ceil((-this.tokens / this.rate) * 1000) + 1),
    );
  }
}

/**
 * A network link between one worker and the coordinator that a test can
 * break: a plain TCP relay on 127.0.0.1 whose connections can all be cut at
 * once, at a chosen moment or when a copy is under way (measured in bytes:
 * SSH is encrypted, so the volume is what tells a copy from chatter). A cut
 * is what a partition looks like to both ends: the socket dies mid-stream.
 */
export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private readonly throttles: Record<keyof Traffic, Throttle> | undefined;
  /** per relayed connection (by its client socket): the first bytes it sent, and whether it is frozen */
  private readonly links = new Map<Socket, { opening: string; frozen: boolean }>();
  private traffic: Traffic = { up: 0, down: 0 };
  private rule: { rule: CutRule; since: Traffic; resolve: (at: number) => void } | undefined;
  /** while down, new connections are refused (closed at once), as an unreachable host would be */
  private down = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    bytesPerSecond: number | undefined,
  ) {
    this.throttles = bytesPerSecond === undefined ? undefined : { up: new Throttle(bytesPerSecond), down: new Throttle(bytesPerSecond) };
  }

  static async start(options: TcpProxyOptions): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = createServer((client) => proxy?.accept(client, options));
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        resolve(typeof address === 'object' && address !== null ? address.port : 0);
      });
    });
    if (options.bytesPerSecond !== undefined && !(options.bytesPerSecond > 0))
      throw new Error(`bytesPerSecond must be positive, not ${options.bytesPerSecond}`);
    proxy = new TcpProxy(server, port, options.bytesPerSecond);
    return proxy;
  }

  get bytes(): Traffic {
    return { ...this.traffic };
  }

  /** Cuts every connection once `rule.bytes` more bytes flowed in `rule.direction`; resolves with the time of the cut. */
  cutWhen(rule: CutRule): Promise<number> {
    return new Promise((resolve) => {
      this.rule = { rule, since: { ...this.traffic }, resolve };
    });
  }

  /** Forgets an armed cut that has not happened. */
  disarm(): void {
    this.rule = undefined;
  }

  /** Cuts every open connection now. */
  cutAll(): void {
    this.throttles?.up.clear();
    this.throttles?.down.clear();
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  /**
   * Freezes the open connections whose first bytes (client to target) hold
   * `marker`, like a Redis connection name: from now on their bytes are
   * dropped in both directions while both sockets stay open, as a peer that
   * silently went away would look. Connections made later flow. Returns how
   * many were frozen.
   */
  freezeOpen(marker: string): number {
    let frozen = 0;
    for (const link of this.links.values()) {
      if (!link.frozen && link.opening.includes(marker)) {
        link.frozen = true;
        frozen++;
      }
    }
    return frozen;
  }

  /** Refuses new connections (and cuts the open ones) until restored: a link that stays down for a while. */
  takeDown(): void {
    this.down = true;
    this.cutAll();
  }

  restore(): void {
    this.down = false;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, options: TcpProxyOptions): void {
    if (this.down) {
      client.destroy();
      return;
    }
    const target = createConnection({ host: options.targetHost ?? '127.0.0.1', port: options.targetPort });
    const link = { opening: '', frozen: false };
    this.links.set(client, link);
    for (const s of [client, target]) {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        this.links.delete(client);
        client.destroy();
        target.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => {
      if (link.opening.length < 4096) link.opening += chunk.toString('latin1');
      if (!link.frozen) this.relay(chunk, client, target, 'up');
    });
    target.on('data', (chunk: Buffer) => {
      if (!link.frozen) this.relay(chunk, target, client, 'down');
    });
  }

  private relay(chunk: Buffer, from: Socket, to: Socket, direction: keyof Traffic): void {
    this.traffic[direction] += chunk.length;
    const armed = this.rule;
    if (armed !== undefined && this.traffic[armed.rule.direction] - armed.since[armed.rule.direction] >= armed.rule.bytes) {
      this.rule = undefined;
      this.cutAll();
      armed.resolve(Date.now());
      return;
    }
    if (this.throttles === undefined) to.write(chunk);
    else this.throttles[direction].send(chunk, to, from);
  }
}
