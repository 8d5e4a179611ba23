/** One observation of the run: seconds since submit, derivations released (queued) and completed so far. */
export interface Sample {
  t: number;
  released: number;
  completed: number;
  /** waiting in the BullMQ queues: work the workers have not taken */
  queued?: number;
  /** worker reports the coordinator has not applied yet */
  unapplied?: number;
}

export interface Rates {
  /** derivations per second from submit until the last was released / completed (NaN when the run never got there) */
  releasedPerSecond: number;
  completedPerSecond: number;
  /** between 10 % and 90 % of the derivations: the rate once the run is under way, without start-up and tail */
  steadyReleasedPerSecond: number;
  steadyCompletedPerSecond: number;
}

/** When the counter first reached `target`, interpolated between samples. */
function crossing(samples: readonly Sample[], key: 'released' | 'completed', target: number): number {
  let previous: Sample = { t: 0, released: 0, completed: 0 };
  for (const s of samples) {
    if (s[key] >= target) {
      const span = s[key] - previous[key];
      return span <= 0 ? s.t : previous.t + ((target - previous[key]) / span) * (s.t - previous.t);
    }
    previous = s;
  }
  return Number.NaN;
}

export function computeRates(samples: readonly Sample[], size: number): Rates {
  const rate = (key: 'released' | 'completed', from: number, to: number) => {
    const a = from === 0 ? 0 : crossing(samples, key, from);
    const b = crossing(samples, key, to);
    return (to - from) / (b - a);
  };
  const lo = Math.ceil(size * 0.1);
  const hi = Math.floor(size * 0.9);
  return {
    releasedPerSecond: rate('released', 0, size),
    completedPerSecond: rate('completed', 0, size),
    steadyReleasedPerSecond: rate('released', lo, hi),
    steadyCompletedPerSecond: rate('completed', lo, hi),
  };
}
