import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { onProcessExit, removeTreeSync } from './process-cleanup.js';

/**
 * A tiny binary cache over HTTP, as the target of uploads: GET and HEAD
 * serve files, PUT stores them (as Nix's http store uploads), and every PUT
 * is counted per file. `down()` stops listening (connections are refused)
 * and `up()` listens again on the same port: an external cache that fails
 * and comes back.
 */
export class HttpCacheServer {
  readonly dir: string;
  /** PUTs per file name (e.g. `<hash>.narinfo`, `nar/<hash>.nar.xz`) */
  readonly puts = new Map<string, number>();
  /** while set, every PUT is answered 403: a cache that refuses uploads */
  refusePuts = false;
  private server: Server | undefined;
  private port = 0;

  private constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'nixfarm-http-cache-'));
    const dir = this.dir;
    onProcessExit(() => removeTreeSync(dir));
  }

  static async start(): Promise<HttpCacheServer> {
    const cache = new HttpCacheServer();
    await cache.up();
    return cache;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** PUTs of narinfo files, per store path hash part. */
  narinfoPuts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [file, n] of this.puts) if (file.endsWith('.narinfo')) out.set(file.slice(0, -'.narinfo'.length), n);
    return out;
  }

  async up(): Promise<void> {
    const server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    this.port = typeof address === 'object' && address !== null ? address.port : 0;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const name = normalize(decodeURIComponent((req.url ?? '/').split('?')[0]!)).replace(/^\/+/, '');
    if (name === '' || name.startsWith('..')) return void res.writeHead(400).end();
    const file = join(this.dir, name);
    if (req.method === 'PUT' && this.refusePuts) return void req.resume().on('end', () => res.writeHead(403).end('uploads refused'));
    if (req.method === 'PUT') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        mkdirSync(dirname(file), { recursive: true });
        writeFileSync(file, Buffer.concat(chunks));
        this.puts.set(name, (this.puts.get(name) ?? 0) + 1);
        res.writeHead(200).end();
      });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405).end();
    if (!existsSync(file)) return void res.writeHead(404).end();
    const body = readFileSync(file);
    res.writeHead(200, { 'content-length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
  }
}
