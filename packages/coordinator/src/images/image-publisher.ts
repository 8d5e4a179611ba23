import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import type { ImageRepository } from '@nixfarm/shared';
import type { DetectedImage } from './image-detector.js';

/** A push that did not happen: `retryable` when the registry may take it later (down, unreachable, a server error). */
export class ImagePushError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'ImagePushError';
  }
}

export interface PushTarget {
  repository: ImageRepository;
  tags: readonly string[];
  /** containers-auth.json file skopeo reads the credentials from */
  authFile?: string;
  /** plain HTTP, no TLS verification (only ever allowed for a loopback registry: the request schema checks) */
  insecure: boolean;
}

/** skopeo's last words: `time="…" level=fatal msg="…"`, or the last line as it is. */
function skopeoMessage(stderr: string): string {
  const lines = stderr.trim().split('\n');
  const last = lines[lines.length - 1] ?? '';
  const msg = /msg="((?:[^"\\]|\\.)*)"/.exec(last)?.[1];
  return (msg ?? last).replace(/\\"/g, '"') || 'skopeo failed without a message';
}

/** What a failed push means for the operator: one message naming the registry and what to do. */
function pushError(registry: string, stderr: string): ImagePushError {
  const detail = skopeoMessage(stderr);
  if (/connection refused|no such host|i\/o timeout|network is unreachable|connection reset|EOF|TLS handshake timeout/i.test(detail))
    return new ImagePushError(`registry ${registry} is unreachable (${detail}): check that it runs and that the address is right`, true);
  if (/unauthorized|authentication required|denied|forbidden|\b40[13]\b/i.test(detail))
    return new ImagePushError(
      `registry ${registry} refused the push (${detail}): check the credentials given with --registry-auth and the repository's permissions`,
      false,
    );
  if (/server gave HTTP response to HTTPS client/i.test(detail))
    return new ImagePushError(
      `registry ${registry} speaks plain HTTP (${detail}): serve it over TLS, or for a test registry on loopback pass --registry-insecure`,
      false,
    );
  if (/x509|certificate/i.test(detail))
    return new ImagePushError(`registry ${registry}'s TLS certificate is not trusted (${detail}): install its CA on the coordinator machine`, false);
  return new ImagePushError(`registry ${registry} did not take the image (${detail})`, true);
}

/**
 * Pushes images with skopeo (Debian's), the one place it is called:
 * argument arrays, credentials only through --authfile. The first tag is
 * a full copy; further tags copy again, which sends only the manifest as the
 * registry has every blob by then.
 */
export class ImagePublisher {
  constructor(private readonly options: { skopeo?: string; timeoutMs?: number } = {}) {}

  /** Returns the manifest digest the registry now holds under every tag. */
  async push(image: DetectedImage, target: PushTarget): Promise<string> {
    const dir = await mkdtemp(path.join(tmpdir(), 'nixfarm-push-'));
    try {
      let digest: string | undefined;
      for (const tag of target.tags) {
        const digestFile = path.join(dir, 'digest');
        const args = [
          'copy',
          '--retry-times',
          '0',
          '--digestfile',
          digestFile,
          ...(target.authFile === undefined ? [] : ['--authfile', target.authFile]),
          ...(target.insecure ? ['--dest-tls-verify=false'] : []),
          image.source,
          `docker://${target.repository.reference}:${tag}`,
        ];
        const result = await execa(this.options.skopeo ?? 'skopeo', args, { reject: false, timeout: this.options.timeoutMs ?? 30 * 60_000, stdin: 'ignore' });
        if (result.failed) {
          if ((result as { code?: string }).code === 'ENOENT')
            throw new ImagePushError('skopeo is not installed on the coordinator machine: install it (apt-get install skopeo)', false);
          throw pushError(target.repository.registry, String(result.stderr ?? ''));
        }
        const pushed = (await readFile(digestFile, 'utf8')).trim();
        if (digest !== undefined && pushed !== digest) throw new ImagePushError(`tag ${tag} got digest ${pushed}, the first tag ${digest}`, true);
        digest = pushed;
      }
      if (digest === undefined) throw new ImagePushError('no tag to push', false);
      return digest;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}
