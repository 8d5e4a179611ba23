import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { Redis } from 'ioredis';
import { freePort } from './free-port.js';
import { isAlive, killGroup, onProcessExit, removeTreeSync, withParentDeathSignal } from './process-cleanup.js';
import { sleep } from './poll.js';
import type { CertFiles, TestCa } from './test-ca.js';

/** redis-server speaking only TLS (its plain port off), with certificates of a test CA. */
export interface PrivateRedisTls {
  ca: TestCa;
  /** the certificate the server presents (default: the valid one for 127.0.0.1) */
  serverCert?: 'server' | 'expired' | 'wrongHost';
  /** redis's tls-auth-clients: whether a client must present a certificate of the CA (default required) */
  clientCerts?: 'required' | 'optional';
}

export interface PrivateRedisOptions {
  /** where redis keeps its data (appendonly files); a fresh temp dir, removed at exit, when absent */
  dir?: string;
  /** true for durability tests: every write goes to the append-only file and survives restart() */
  appendOnly?: boolean;
  /** a fixed port; a free one is picked when absent. Never 6379: a system redis may be there. */
  port?: number;
  /** how long to wait for PING to answer (ms) */
  startTimeoutMs?: number;
  /** speak TLS only: the URL is rediss:// */
  tls?: PrivateRedisTls;
}

export interface PrivateRedis {
  url: string;
  port: number;
  dir: string;
  /** pid of the running redis-server, undefined while stopped */
  readonly pid: number | undefined;
  /** SIGTERM, then wait for exit (SIGKILL after 5 s). Data in dir is kept for restart(). */
  stop(): Promise<void>;
  /** stop if running, then start again on the same port with the same dir */
  restart(): Promise<void>;
}

/** Port the system redis may listen on; tests must never touch it. */
const SYSTEM_REDIS_PORT = 6379;

class RedisStartError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(`${message}\nredis-server output:\n${output}`);
    this.name = 'RedisStartError';
  }
}

/**
 * One PING over a raw socket (over TLS in TLS mode): true if redis answered +PONG.
 * The harness only asks whether redis is up, so it accepts any server certificate
 * (an expired one is what some tests serve); the product never does.
 */
function ping(port: number, tls: PrivateRedisTls | undefined, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket =
      tls === undefined
        ? createConnection({ host: '127.0.0.1', port })
        : tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, cert: readFileSync(tls.ca.client.cert), key: readFileSync(tls.ca.client.key) });
    let answer = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once(tls === undefined ? 'connect' : 'secureConnect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
  });
}

class PrivateRedisServer implements PrivateRedis {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private output = '';
  private unregister: () => void = () => {};

  constructor(
    public port: number,
    readonly dir: string,
    private readonly appendOnly: boolean,
    private readonly startTimeoutMs: number,
    private readonly ownsDir: boolean,
    private readonly tls: PrivateRedisTls | undefined,
  ) {}

  get url(): string {
    return `${this.tls === undefined ? 'redis' : 'rediss'}://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    if (this.port === SYSTEM_REDIS_PORT) throw new Error('refusing to start a test redis on 6379, where a system redis may run');
    this.output = '';
    const { command, args } = withParentDeathSignal('redis-server', [
      ...this.portArgs(),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      this.appendOnly ? 'yes' : 'no',
      '--dir',
      this.dir,
      '--daemonize',
      'no',
      '--logfile',
      '',
    ]);
    // detached: its own process group, so a Ctrl-C meant for the test runner
    // does not kill redis before the test's own teardown runs
    const child = spawn(command, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const keep = (chunk: Buffer) => {
      this.output = (this.output + chunk.toString()).slice(-8000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    // A redis someone forgot to stop must not keep the test process alive:
    // unref it; the exit hook below kills it. stop() waits on it explicitly.
    child.unref();
    for (const stream of [child.stdout, child.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.();
    let exitedEarly = false;
    this.exited = new Promise((resolve) => {
      child.once('exit', () => {
        exitedEarly = true;
        resolve();
      });
      child.once('error', (err) => {
        this.output += `\nspawn error: ${err.message}`;
        exitedEarly = true;
        resolve();
      });
    });
    const pid = child.pid;
    this.unregister();
    this.unregister = onProcessExit(() => {
      killGroup(pid, 'SIGKILL');
      if (this.ownsDir) removeTreeSync(this.dir);
    });

    const deadline = Date.now() + this.startTimeoutMs;
    while (Date.now() < deadline) {
      if (exitedEarly) throw new RedisStartError(`redis-server on port ${this.port} exited during start`, this.output);
      if (await ping(this.port, this.tls)) return;
      await sleep(20);
    }
    killGroup(pid, 'SIGKILL');
    throw new RedisStartError(`redis-server on port ${this.port} did not answer PING within ${this.startTimeoutMs} ms`, this.output);
  }

  /** the plain port, or in TLS mode the TLS port with the plain one off */
  private portArgs(): string[] {
    if (this.tls === undefined) return ['--port', String(this.port)];
    const served: CertFiles = this.tls.ca[this.tls.serverCert ?? 'server'];
    return [
      '--port',
      '0',
      '--tls-port',
      String(this.port),
      '--tls-cert-file',
      served.cert,
      '--tls-key-file',
      served.key,
      '--tls-ca-cert-file',
      this.tls.ca.caCert,
      '--tls-auth-clients',
      this.tls.clientCerts === 'optional' ? 'optional' : 'yes',
    ];
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined) return;
    this.child = undefined;
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined && isAlive(child.pid)) {
      child.ref(); // keep the event loop alive until it has exited
      killGroup(child.pid, 'SIGTERM');
      const timer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), 5000);
      await this.exited;
      clearTimeout(timer);
    }
    // keep the dir-removal part of the exit hook when we own the dir; the process is gone
    this.unregister();
    this.unregister = this.ownsDir ? onProcessExit(() => removeTreeSync(this.dir)) : () => {};
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

/**
 * Starts a redis-server of its own for one test (file): loopback only, no RDB
 * snapshots, append-only on request. Always call stop() in the test's teardown;
 * an exit hook kills it too if a test forgets or crashes.
 */
export async function startPrivateRedis(options: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  const ownsDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'nixfarm-redis-'));
  mkdirSync(dir, { recursive: true });
  const timeout = options.startTimeoutMs ?? 10_000;
  // A picked port can be taken between our probe and redis's bind; try a few.
  for (let attempt = 0; ; attempt++) {
    const port = options.port ?? (await freePort());
    const server = new PrivateRedisServer(port, dir, options.appendOnly ?? false, timeout, ownsDir, options.tls);
    try {
      await server.start();
      return server;
    } catch (err) {
      await server.stop().catch(() => {});
      if (options.port !== undefined || attempt >= 4 || !(err instanceof RedisStartError)) {
        if (ownsDir) removeTreeSync(dir);
        throw err;
      }
    }
  }
}

/**
 * A private redis-server for the tests of one describe(): started before
 * them, stopped after (call it inside the describe). Answers the suite's
 * client, one connection with no request retry limit; calling it before the
 * suite's hooks ran is an error that names `who`.
 */
export function privateRedisForSuite(who: string): () => Redis {
  let server: PrivateRedis | undefined;
  let redis: Redis | undefined;
  before(async () => {
    server = await startPrivateRedis({});
    redis = new Redis(server.url, { maxRetriesPerRequest: null });
  });
  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });
  return () => {
    if (redis === undefined) throw new Error(`${who}: Redis is not started yet (use it inside a test)`);
    return redis;
  };
}
