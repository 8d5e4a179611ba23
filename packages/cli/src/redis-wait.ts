import type { RedisWaitHooks } from '@nixfarm/shared';

export interface CliRedisWait {
  /** for the Coordinator's or FarmWorker's redisWait option */
  hooks: RedisWaitHooks;
  /** awaits start(), then stops listening for signals */
  during<T>(start: Promise<T>): Promise<T>;
}

/**
 * While a long-running command starts, it may wait for Redis for a long time:
 * what the wait says goes to stderr (an operator should not need to read JSON
 * logs to learn that Redis is down), and SIGINT/SIGTERM stop it cleanly. A
 * signal that arrives after the wait, while start() finishes, is raised again
 * once start() has returned, for the command's own shutdown handling.
 */
export function cliRedisWait(who: string): CliRedisWait {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    received ??= signal;
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const stopListening = (): void => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  return {
    hooks: {
      signal: controller.signal,
      onNotice: (message) => process.stderr.write(`${who}: ${message}\n`),
    },
    during: async (start) => {
      let result;
      try {
        result = await start;
      } finally {
        stopListening();
      }
      // Started after all: the command installs its shutdown handler right after start(); hand the signal on to it.
      const signal = received;
      if (signal !== undefined) setImmediate(() => process.kill(process.pid, signal));
      return result;
    },
  };
}
