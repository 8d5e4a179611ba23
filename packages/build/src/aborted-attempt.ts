import { NixfarmError } from '@nixfarm/shared';

/** What a report says of an attempt that an error ended before it got to an answer. */
export interface AbortedAttempt {
  outcome: 'aborted';
  error: string;
  errorCode?: string;
  retryable?: boolean;
}

/** An error as a report's `aborted` outcome: its code and whether it is worth retrying travel as data; nothing downstream reads the message. */
export function abortedAttempt(error: unknown): AbortedAttempt {
  return {
    outcome: 'aborted',
    error: error instanceof Error ? error.message : String(error),
    ...(error instanceof NixfarmError ? { errorCode: error.code, retryable: error.retryable } : {}),
  };
}
