import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis, type RedisOptions } from 'ioredis';
import { sentinelUrlOf } from '@nixfarm/shared';
import { freePort } from './free-port.js';
import { startPrivateRedis, type PrivateRedis } from './private-redis.js';
import { killGroup, onProcessExit, removeTreeSync, withParentDeathSignal } from './process-cleanup.js';
import { pollFor } from './poll.js';
import { TcpProxy } from './tcp-proxy.js';
import type { TestCa } from './test-ca.js';

export interface SentinelRedisOptions {
  /** the name the sentinels monitor (default nixfarm) */
  master?: string;
  /** how long a silent primary takes to be judged down (ms; default 1000) */
  downAfterMs?: number;
  /**
   * The replica announces itself at a TcpProxy in front of it (replica-announce-port),
   * so once promoted every client reaches it through a link the test can freeze.
   */
  replicaBehindProxy?: boolean;
  /**
   * Everything speaks TLS only (plain ports off), with this CA's server certificate,
   * and wants a client certificate of it; replication and the sentinels' own links
   * use its client certificate. The url is rediss+sentinel://.
   */
  tls?: TestCa;
}

/** An address as the sentinels give it. */
export interface RedisAddress {
  host: string;
  port: number;
}

/**
 * A primary, one replica (replicaof) and three sentinels (quorum 2), all on
 * loopback with their files in a private dir: Redis as operators run it for
 * failover. Its url is the redis+sentinel:// URL; killPrimary() is the
 * fault. Looks like a PrivateRedis to TestFarm (port and pid: the first
 * primary's).
 */
export class SentinelRedis implements PrivateRedis {
  private readonly sentinels: Array<{ port: number; child: ChildProcess }> = [];
  private unregister: () => void = () => undefined;

  private constructor(
    readonly dir: string,
    readonly master: string,
    readonly primary: PrivateRedis,
    readonly replica: PrivateRedis,
    /** the link clients reach the replica through, with replicaBehindProxy */
    readonly replicaLink: TcpProxy | undefined,
    private readonly tls: TestCa | undefined,
  ) {}

  static async start(options: SentinelRedisOptions = {}): Promise<SentinelRedis> {
    const dir = mkdtempSync(join(tmpdir(), 'nixfarm-sentinel-'));
    const master = options.master ?? 'nixfarm';
    const ca = options.tls;
    // A TLS node links to others (replication, sentinels) over TLS too, presenting the client certificate.
    const tlsLinks = ca === undefined ? [] : ['--tls-replication', 'yes', '--tls-client-cert-file', ca.client.cert, '--tls-client-key-file', ca.client.key];
    const tls = ca === undefined ? {} : { tls: { ca } };
    const primary = await startPrivateRedis({ dir: join(dir, 'primary'), ...tls, extraArgs: tlsLinks });
    const replicaPort = await freePort();
    const link = options.replicaBehindProxy === true ? await TcpProxy.start({ targetPort: replicaPort }) : undefined;
    const announce = link === undefined ? [] : ['--replica-announce-ip', '127.0.0.1', '--replica-announce-port', String(link.port)];
    const replica = await startPrivateRedis({
      dir: join(dir, 'replica'),
      port: replicaPort,
      ...tls,
      extraArgs: ['--replicaof', '127.0.0.1', String(primary.port), ...announce, ...tlsLinks],
    });
    const set = new SentinelRedis(dir, master, primary, replica, link, ca);
    set.unregister = onProcessExit(() => {
      for (const s of set.sentinels) killGroup(s.child.pid, 'SIGKILL');
      removeTreeSync(dir);
    });
    try {
      for (let i = 1; i <= 3; i++) await set.startSentinel(i, options.downAfterMs ?? 1000);
      await set.waitUntilReady();
    } catch (error) {
      await set.stop();
      throw error;
    }
    return set;
  }

  get url(): string {
    return sentinelUrlOf(
      this.sentinels.map((s) => `127.0.0.1:${s.port}`),
      this.master,
      this.tls !== undefined,
    );
  }

  get port(): number {
    return this.primary.port;
  }

  get pid(): number | undefined {
    return this.primary.pid;
  }

  /** the replica's port as the sentinels name it (its proxy's, with replicaBehindProxy) */
  get replicaAnnouncedPort(): number {
    return this.replicaLink?.port ?? this.replica.port;
  }

  get sentinelPorts(): number[] {
    return this.sentinels.map((s) => s.port);
  }

  /** Where the sentinels say the primary is now (asks each until one answers). */
  async masterAddress(): Promise<RedisAddress> {
    for (const { port } of this.sentinels) {
      const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, ...this.clientTls() });
      client.on('error', () => undefined);
      try {
        await client.connect();
        const reply = (await client.call('SENTINEL', 'get-master-addr-by-name', this.master)) as [string, string] | null;
        if (reply !== null) return { host: reply[0], port: Number(reply[1]) };
      } catch {
        // the next sentinel
      } finally {
        client.disconnect();
      }
    }
    throw new Error(`no sentinel of ${this.master} answered`);
  }

  /** SIGKILL of the first primary: a crash, with whatever it had not sent to the replica lost. */
  killPrimary(): void {
    killGroup(this.primary.pid, 'SIGKILL');
  }

  async stop(): Promise<void> {
    for (const s of this.sentinels) killGroup(s.child.pid, 'SIGKILL');
    await this.replicaLink?.close();
    await this.replica.stop();
    await this.primary.stop();
    this.unregister();
    removeTreeSync(this.dir);
  }

  restart(): Promise<void> {
    return Promise.reject(new Error('a Sentinel set is not restarted as a whole; kill its primary (killPrimary) instead'));
  }

  /** the options a harness client needs for a TLS sentinel */
  private clientTls(): RedisOptions {
    const ca = this.tls;
    if (ca === undefined) return {};
    return { tls: { ca: readFileSync(ca.caCert), cert: readFileSync(ca.client.cert), key: readFileSync(ca.client.key) } };
  }

  /** sentinel.conf's listening lines: the plain port, or TLS only with the links to the nodes and to each other over TLS */
  private listenLines(port: number): string[] {
    const ca = this.tls;
    if (ca === undefined) return [`port ${port}`];
    return [
      'port 0',
      `tls-port ${port}`,
      `tls-cert-file ${ca.server.cert}`,
      `tls-key-file ${ca.server.key}`,
      `tls-client-cert-file ${ca.client.cert}`,
      `tls-client-key-file ${ca.client.key}`,
      `tls-ca-cert-file ${ca.caCert}`,
      'tls-auth-clients yes',
      'tls-replication yes',
    ];
  }

  private async startSentinel(n: number, downAfterMs: number): Promise<void> {
    const dir = join(this.dir, `sentinel-${n}`);
    mkdirSync(dir, { recursive: true });
    const port = await freePort();
    const conf = join(dir, 'sentinel.conf');
    // Sentinel rewrites its own config (what it learnt): the file must be its own and writable.
    writeFileSync(
      conf,
      [
        ...this.listenLines(port),
        'bind 127.0.0.1',
        'daemonize no',
        `dir ${dir}`,
        'logfile ""',
        `sentinel monitor ${this.master} 127.0.0.1 ${this.primary.port} 2`,
        `sentinel down-after-milliseconds ${this.master} ${downAfterMs}`,
        `sentinel failover-timeout ${this.master} 10000`,
        `sentinel parallel-syncs ${this.master} 1`,
        '',
      ].join('\n'),
    );
    const { command, args } = withParentDeathSignal('redis-sentinel', [conf]);
    const child = spawn(command, args, { detached: true, stdio: ['ignore', 'ignore', 'ignore'] });
    child.unref();
    this.sentinels.push({ port, child });
  }

  /** Every sentinel knows the replica and the two other sentinels: only then can they agree on a failover. */
  private async waitUntilReady(): Promise<void> {
    await pollFor(
      async () => {
        for (const { port } of this.sentinels) {
          const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, ...this.clientTls() });
          client.on('error', () => undefined);
          try {
            await client.connect();
            const replicas = (await client.call('SENTINEL', 'replicas', this.master)) as unknown[];
            const others = (await client.call('SENTINEL', 'sentinels', this.master)) as unknown[];
            if (replicas.length < 1 || others.length < 2) return undefined;
          } catch {
            return undefined;
          } finally {
            client.disconnect();
          }
        }
        return true;
      },
      30_000,
      () => `sentinels on ${this.sentinelPorts.join(', ')} to see the replica and each other`,
      200,
    );
  }
}
