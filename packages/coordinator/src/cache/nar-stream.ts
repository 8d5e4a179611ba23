import { spawn } from 'node:child_process';
import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from '@nixfarm/shared';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';

/** Of a failing process's stderr, what goes into the log. */
const STDERR_KEPT = 4096;

/**
 * A store path's NAR, compressed with zstd as it is read: `nix-store --dump`
 * piped through `zstd`, with back-pressure from the client, never the whole
 * NAR in memory. The stream ends only when both processes exited 0; a
 * failure of either (the path was collected meanwhile) destroys it, so the
 * client sees a broken transfer, never a short NAR that looks whole. A
 * client that goes away stops both processes.
 */
export function compressedNar(nix: Pick<CoordinatorNix, 'dumpPath'>, storePath: string, logger: Logger, onBytes: (bytes: number) => void): Readable {
  const dump = nix.dumpPath(storePath);
  const zstd = spawn('zstd', ['-q', '-c', '-3'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const body = new PassThrough();
  let stderr = '';
  const keep = (chunk: Buffer) => {
    if (stderr.length < STDERR_KEPT) stderr += chunk.toString('utf8');
  };
  dump.stderr.on('data', keep);
  zstd.stderr.on('data', keep);
  dump.stdout.pipe(zstd.stdin);
  // A client gone mid-transfer closes zstd's stdin early: the exit codes below say so, nothing else to handle.
  zstd.stdin.on('error', () => undefined);
  zstd.stdout.on('data', (chunk: Buffer) => onBytes(chunk.length));
  zstd.stdout.pipe(body, { end: false });
  const zstdExit = new Promise<number | null>((resolve, reject) => {
    zstd.on('error', reject);
    zstd.on('close', (code) => resolve(code));
  });
  let finished = false;
  void Promise.all([dump, zstdExit]).then(
    ([dumped, zstdCode]) => {
      finished = true;
      if (dumped.exitCode === 0 && zstdCode === 0) {
        body.end();
        return;
      }
      const why = dumped.exitCode !== 0 ? `nix-store --dump exited ${dumped.exitCode}` : `zstd exited ${zstdCode}`;
      logger.warn({ storePath, stderr: stderr.trim() }, `serving a NAR failed: ${why}`);
      body.destroy(new Error(`cannot stream the NAR of ${storePath}: ${why}`));
    },
    (error: unknown) => {
      finished = true;
      logger.warn({ err: error, storePath }, 'serving a NAR failed: zstd did not start (is it installed? Debian: zstd)');
      dump.kill();
      body.destroy(error as Error);
    },
  );
  body.on('close', () => {
    if (finished) return;
    dump.kill();
    zstd.kill();
  });
  return body;
}
