import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import { assertStorePath } from '../store-path.js';

export interface NixExportOptions {
  /** `--option NAME VALUE` pairs, as the local store's serve sessions get them */
  nixOptions?: ReadonlyArray<readonly [string, string]>;
  env?: NodeJS.ProcessEnv;
}

/** Starts one: `paths`' export stream written straight into `sink`'s file descriptor (see ServeConnection.importFromProcess). */
export type ExporterStart = (paths: readonly string[], sink: Writable) => ChildProcess;

/**
 * `nix-store --export PATHS` with its stdout the given stream's own file
 * descriptor (a serve session's stdin pipe): the stream never passes through
 * this process. In a process group of its own, as the serve sessions, so a
 * draining worker's copy survives the signal that started the drain.
 */
export function nixExporter(options: NixExportOptions): ExporterStart {
  const optionArgs = (options.nixOptions ?? []).flatMap(([name, value]) => ['--option', name, value]);
  return (paths, sink) => {
    for (const p of paths) assertStorePath(p);
    return spawn('nix-store', ['--export', ...optionArgs, ...paths], {
      stdio: ['ignore', sink, 'pipe'],
      env: options.env === undefined ? undefined : { ...process.env, ...options.env },
      detached: true,
    });
  };
}
