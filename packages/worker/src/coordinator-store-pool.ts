import { ServePool, ServeSession } from '@nixfarm/shared';

export interface CoordinatorStorePoolOptions {
  /** the worker's ssh config (host key pinned, worker key, one multiplexed connection) */
  sshConfigPath: string;
  hostAlias: string;
  maxIdle: number;
  env?: NodeJS.ProcessEnv;
}

/**
 * Serve sessions with the coordinator's store over its SSH endpoint. Each
 * session is one long-lived `nix-store --serve --write` channel, so a copy
 * costs round trips on an open connection, not a new SSH session and Nix
 * process per step.
 */
export function coordinatorStorePool(options: CoordinatorStorePoolOptions): ServePool {
  return new ServePool({
    maxIdle: options.maxIdle,
    start: () =>
      ServeSession.start({
        command: 'ssh',
        args: ['-F', options.sshConfigPath, options.hostAlias, 'nix-store', '--serve', '--write'],
        env: options.env === undefined ? undefined : { ...process.env, ...options.env },
        peer: "the coordinator's store",
        // a draining worker's copies must survive the signal that started the drain
        ownProcessGroup: true,
      }),
  });
}
