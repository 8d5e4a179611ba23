import type { BuildTimings, TerminalStatus } from '@nixfarm/shared';
import type { ReadyDerivation } from './ready-derivation.js';

/** One try of one BullMQ job: the job id and BullMQ's count of its starts (a re-run after a lost lock keeps the id, not the try). */
export interface JobTry {
  jobId: string;
  attempt: number;
}

/** The attempt a report speaks for. */
export interface BuildAttempt extends JobTry {
  worker: string;
}

export interface FinishDetails {
  worker?: string;
  /** when the worker finished (its clock); the coordinator's clock otherwise */
  finishedAt?: number;
  timings?: BuildTimings;
  error?: string;
  logTail?: string[];
  outputs?: Record<string, string>;
}

/** A change a worker's report makes to one derivation. */
export type GraphTransition =
  | { type: 'start'; hash: string; worker: string; at: number; job?: JobTry }
  | {
      type: 'finish';
      hash: string;
      status: TerminalStatus;
      details: FinishDetails;
      /** who reports it: an end other than success applies only from the running attempt; absent: the coordinator's own decision */
      reporter?: BuildAttempt;
      /** the build's outputs differ from the coordinator's copy: recorded on the node, also for a duplicate report */
      divergence?: string;
    };

export interface StartOutcome {
  type: 'start';
  /** false when the derivation was not queued or running: a stale report */
  applied: boolean;
  /** the runs that need the derivation (when applied) */
  runIds: string[];
}

export interface FinishOutcome {
  type: 'finish';
  /** the runs that need the derivation (when applied) */
  runIds: string[];
  released: ReadyDerivation[];
  dependencyFailed: string[];
  finishedRuns: string[];
  /** false when the node had already ended (a duplicate or late report), or the report was stale */
  applied: boolean;
  /** why the report was dropped as stale: it came from an attempt that no longer decides the build */
  stale?: string;
}

/** What a retry request did. */
export type RequeueOutcome =
  | { type: 'requeued'; ready: ReadyDerivation }
  | { type: 'ignored'; reason: 'not-pending' }
  | { type: 'ignored'; reason: 'stale'; why: string };

export interface RegistrationOutcome {
  ready: ReadyDerivation[];
  /** hashes of derivations that failed before: reported at once, not rebuilt */
  cachedFailures: string[];
  /** hashes of derivations that cannot be built because an input failed before */
  dependencyFailed: string[];
  /** derivations another run already had pending */
  joined: number;
}

/** What growing a run did: registered (like a registration), or refused because the run is not running or no longer open. */
export type GrowOutcome = ({ type: 'grown' } & RegistrationOutcome) | { type: 'refused'; reason: 'not-running' | 'closed' };
