import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { NixfarmError, type Logger } from '@nixfarm/shared';

export interface EmbeddedRedisOptions {
  /** data directory (append-only file lives here) */
  dir: string;
  /** 0: pick a free port */
  port?: number;
  logger: Logger;
  command?: string;
}

/**
 * A private redis-server for a farm that has none configured: durable
 * (append-only), bound to loopback, stopped with the coordinator.
 */
export class EmbeddedRedis {
  private child: ChildProcess | undefined;
  private portInUse = 0;

  constructor(private readonly options: EmbeddedRedisOptions) {}

  get url(): string {
    return `redis://127.0.0.1:${this.portInUse}`;
  }

  async start(): Promise<string> {
    const dir = path.resolve(this.options.dir);
    await mkdir(dir, { recursive: true });
    this.portInUse = this.options.port && this.options.port > 0 ? this.options.port : await freePort();
    const command = this.options.command ?? 'redis-server';
    const args = ['--port', String(this.portInUse), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--save', '', '--daemonize', 'no'];
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
    child.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once('error', resolve);
      child.once('spawn', () => resolve(undefined));
    });
    if (spawned !== undefined) {
      throw new NixfarmError(
        'redis-not-found',
        `no Redis configured and ${command} could not be started (${spawned.message}): install redis-server (Debian: apt-get install redis-server; macOS: brew install redis) or pass --redis redis://HOST:PORT`,
      );
    }
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new NixfarmError('redis-failed', `embedded redis-server exited with code ${child.exitCode}:\n${output}`);
      if (await canConnect(this.portInUse)) {
        this.options.logger.info({ url: this.url, dir }, 'embedded redis started');
        return this.url;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new NixfarmError('redis-failed', `embedded redis-server did not accept connections within 10 s:\n${output}`);
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.write('PING\r\n');
    });
    socket.once('data', (d) => {
      socket.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    socket.once('error', () => resolve(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
