import { createWriteStream } from 'node:fs';
import type { ChildProcess } from 'node:child_process';

/**
 * Appends a child's stdout and stderr to one log file. Neither pipe ends the
 * file (the first stream to end would, and the other's next write would
 * throw "write after end" into whatever test runs then); the file is closed
 * once the child and both its streams are done.
 */
export function logOutputTo(child: ChildProcess, file: string): void {
  const log = createWriteStream(file, { flags: 'a' });
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  child.once('close', () => log.end());
}
