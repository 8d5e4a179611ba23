import { ServePool } from './serve-pool.js';
import { ServeSession } from './serve-session.js';

export interface LocalStorePoolOptions {
  /** `--option NAME VALUE` pairs for every session (sandbox, substituters, extra-platforms, ...) */
  nixOptions?: ReadonlyArray<readonly [string, string]>;
  env?: NodeJS.ProcessEnv;
  /** allow imports and builds (`--write`) */
  write: boolean;
  maxIdle: number;
  /** names the store in errors */
  peer?: string;
  /** each session's process in a group of its own (see ServeSessionOptions) */
  ownProcessGroup?: boolean;
}

/** Serve sessions with this machine's own store: `nix-store --serve [--write]`, started once and reused. */
export function localStorePool(options: LocalStorePoolOptions): ServePool {
  const args = ['--serve', ...(options.write ? ['--write'] : []), ...(options.nixOptions ?? []).flatMap(([name, value]) => ['--option', name, value])];
  return new ServePool({
    maxIdle: options.maxIdle,
    start: () =>
      ServeSession.start({
        command: 'nix-store',
        args,
        env: options.env === undefined ? undefined : { ...process.env, ...options.env },
        peer: options.peer ?? 'the local Nix store',
        ownProcessGroup: options.ownProcessGroup,
      }),
  });
}
