/** Resolves on the first SIGINT or SIGTERM, so a command can stop cleanly (drain, close, exit 0). */
export function waitForShutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

export interface ShutdownSignals {
  /** the first SIGINT or SIGTERM */
  first: Promise<NodeJS.Signals>;
  /** the one after it: the operator insists (a worker hands its builds back at once) */
  second: Promise<NodeJS.Signals>;
  /** stops listening; later signals take their default action again */
  dispose(): void;
}

/**
 * For a command that stops in two steps: the first signal starts a graceful
 * stop, a second one cuts it short. Listening throughout keeps a second
 * Ctrl-C from killing the process half-way (its default action).
 */
export function listenForShutdownSignals(): ShutdownSignals {
  let count = 0;
  let resolveFirst!: (signal: NodeJS.Signals) => void;
  let resolveSecond!: (signal: NodeJS.Signals) => void;
  const first = new Promise<NodeJS.Signals>((r) => (resolveFirst = r));
  const second = new Promise<NodeJS.Signals>((r) => (resolveSecond = r));
  const onSignal = (signal: NodeJS.Signals) => {
    count++;
    if (count === 1) resolveFirst(signal);
    else if (count === 2) resolveSecond(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    first,
    second,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
