import { createReadStream } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { HeadObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { NixfarmError, hashPart } from '@nixfarm/shared';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';
import type { UploadTarget } from './upload-target.js';

export interface S3CacheOptions {
  nix: Pick<CoordinatorNix, 'copyTo' | 'closure'>;
  /** where each S3 cache's files are staged by `nix copy --to file://` before they are uploaded */
  stagingDir: string;
}

/** Query parameters of an s3:// URL that are the S3 client's (Nix's names); the others are Nix's binary cache settings, given to the staging copy. */
const S3_PARAMETERS = new Set(['endpoint', 'region', 'profile', 'scheme']);

/**
 * An S3-compatible binary cache. Debian's Nix has no S3 store, so the closure
 * is staged as a file:// cache (Nix writes the NARs and signed narinfos), and
 * the files are put with the AWS SDK: each path's NAR before its narinfo, so
 * a reader never sees a narinfo whose NAR is missing; a path whose narinfo is
 * there already is not put again. Credentials come from the SDK's own chain
 * (AWS_* environment variables, the shared credentials file and `profile=`),
 * never from the URL.
 */
export class S3Cache {
  private readonly clients = new Map<string, S3Client>();

  constructor(private readonly options: S3CacheOptions) {}

  async upload(target: UploadTarget, outputPath: string): Promise<void> {
    // One staging directory per upload, removed after: uploads at once never share files, and staged NARs do not pile up.
    const staging = path.join(this.options.stagingDir, `${target.id}-${hashPart(outputPath)}`);
    try {
      await this.stageAndPut(target, outputPath, staging);
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  private async stageAndPut(target: UploadTarget, outputPath: string, staging: string): Promise<void> {
    const url = new URL(target.url);
    const nixParameters = new URLSearchParams([...url.searchParams].filter(([name]) => !S3_PARAMETERS.has(name)));
    const query = nixParameters.size === 0 ? '' : `?${nixParameters}`;
    await this.options.nix.copyTo(`file://${staging}${query}`, [outputPath]);
    const client = this.client(target, url);
    const bucket = target.location;
    const put = (key: string, contentType: string) => this.put(client, target, key, path.join(staging, key), contentType);
    if (!(await this.exists(client, target, 'nix-cache-info'))) await put('nix-cache-info', 'text/x-nix-cache-info');
    for (const p of await this.options.nix.closure([outputPath])) {
      const narinfo = `${hashPart(p)}.narinfo`;
      if (await this.exists(client, target, narinfo)) continue;
      const nar = /^URL: (.+)$/m.exec(await readFile(path.join(staging, narinfo), 'utf8'))?.[1];
      if (nar === undefined) throw new NixfarmError('cache-upload-failed', `staged ${narinfo} for ${bucket} names no NAR (no URL: line)`, { retryable: true });
      await put(nar, 'application/x-nix-nar');
      await put(narinfo, 'text/x-nix-narinfo');
    }
  }

  private client(target: UploadTarget, url: URL): S3Client {
    let client = this.clients.get(target.id);
    if (client === undefined) {
      const endpoint = url.searchParams.get('endpoint');
      const scheme = url.searchParams.get('scheme') ?? 'https';
      const profile = url.searchParams.get('profile');
      client = new S3Client({
        region: url.searchParams.get('region') ?? 'us-east-1',
        ...(endpoint === null ? {} : { endpoint: endpoint.includes('://') ? endpoint : `${scheme}://${endpoint}`, forcePathStyle: true }),
        ...(profile === null ? {} : { profile }),
        // Retries are the upload queue's, with its back-off: one attempt here.
        maxAttempts: 1,
        // Streamed bodies would go aws-chunked with a trailing checksum, which S3-compatible servers (MinIO's older releases, s3rver) store as is.
        requestChecksumCalculation: 'WHEN_REQUIRED',
      });
      this.clients.set(target.id, client);
    }
    return client;
  }

  private async exists(client: S3Client, target: UploadTarget, key: string): Promise<boolean> {
    try {
      await client.send(new HeadObjectCommand({ Bucket: target.location, Key: key }));
      return true;
    } catch (error) {
      if (error instanceof S3ServiceException && error.$metadata.httpStatusCode === 404) return false;
      throw s3Error(target, `HEAD ${key}`, error);
    }
  }

  private async put(client: S3Client, target: UploadTarget, key: string, file: string, contentType: string): Promise<void> {
    try {
      const { size } = await stat(file);
      await client.send(
        new PutObjectCommand({ Bucket: target.location, Key: key, Body: createReadStream(file), ContentLength: size, ContentType: contentType }),
      );
    } catch (error) {
      throw s3Error(target, `PUT ${key}`, error);
    }
  }

  close(): void {
    for (const client of this.clients.values()) client.destroy();
  }
}

function s3Error(target: UploadTarget, what: string, error: unknown): NixfarmError {
  const status = error instanceof S3ServiceException ? ` (HTTP ${error.$metadata.httpStatusCode ?? '?'} ${error.name})` : '';
  const reason = error instanceof Error ? error.message : String(error);
  return new NixfarmError('cache-upload-failed', `S3 cache ${target.location} (${target.url}): ${what} failed${status}: ${reason}`, {
    retryable: true,
    cause: error,
  });
}
