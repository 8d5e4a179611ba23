import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import { onProcessExit, removeTreeSync } from './process-cleanup.js';

/** s3rver's fixed credentials: it checks signatures made with them. */
export const S3RVER_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };

/**
 * A local S3-compatible server (s3rver from npm) with one bucket, as the
 * target of S3 uploads; it counts object PUTs per key. Nix here cannot read
 * s3:// itself, so a machine substitutes through the bucket's plain HTTP URL
 * (path style, anonymous GETs).
 */
export class S3CacheServer {
  /** object PUTs per key */
  readonly puts = new Map<string, number>();

  private constructor(
    private readonly server: S3rver,
    readonly port: number,
    readonly bucket: string,
  ) {}

  static async start(bucket = 'nix-cache'): Promise<S3CacheServer> {
    const directory = mkdtempSync(join(tmpdir(), 'nixfarm-s3-'));
    onProcessExit(() => removeTreeSync(directory));
    const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] });
    const { port } = await server.run();
    const cache = new S3CacheServer(server, port, bucket);
    server.on('event', (event) => {
      for (const r of event.Records) if (r.eventName.startsWith('ObjectCreated')) cache.puts.set(r.s3.object.key, (cache.puts.get(r.s3.object.key) ?? 0) + 1);
    });
    return cache;
  }

  /** the URL `--push-to` takes */
  get pushUrl(): string {
    return `s3://${this.bucket}?endpoint=http://127.0.0.1:${this.port}&region=us-east-1`;
  }

  /** the bucket over plain HTTP, as a substituter */
  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}/${this.bucket}`;
  }

  stop(): Promise<void> {
    return this.server.close();
  }
}
