import { LOG_FIELD, logAttemptKey } from '@nixfarm/shared';

export interface LogAttemptInfo {
  worker: string;
  jobId: string;
  attempt: number;
  /** the attempt's outcome, once its end entry arrived */
  end?: string;
  /** lines of log it streamed */
  lines: number;
}

/**
 * Turns build-log stream entries into the log's text, incrementally (the
 * same code serves a snapshot and a live follow). One attempt's lines are
 * the plain log, as Nix wrote it; a later attempt (a re-run after a lost
 * worker, or a retry) follows under a header line, and an attempt that never
 * reported its end before another began, or before the log was read, is
 * marked incomplete: what it streamed is kept.
 */
export class LogRenderer {
  private readonly attempts = new Map<string, LogAttemptInfo>();
  private current: string | undefined;

  get attemptList(): LogAttemptInfo[] {
    return [...this.attempts.values()];
  }

  /** The text one entry adds. */
  consume(fields: Readonly<Record<string, string>>): string {
    const worker = fields[LOG_FIELD.worker] ?? '?';
    const jobId = fields[LOG_FIELD.jobId] ?? '?';
    const attempt = Number(fields[LOG_FIELD.attempt] ?? 0);
    const key = logAttemptKey(worker, attempt, jobId);
    let out = '';
    if (key !== this.current) {
      out += this.closeCurrent();
      if (!this.attempts.has(key)) {
        if (this.attempts.size > 0) out += `nixfarm: try ${attempt} (job ${jobId}) on worker ${worker}:\n`;
        this.attempts.set(key, { worker, jobId, attempt, lines: 0 });
      }
      this.current = key;
    }
    const info = this.attempts.get(key)!;
    const lines = fields[LOG_FIELD.lines];
    if (lines !== undefined) {
      out += `${lines}\n`;
      info.lines += lines.split('\n').length;
    }
    const end = fields[LOG_FIELD.end];
    if (end !== undefined) info.end = end;
    return out;
  }

  /** The marker for the attempt in progress when it has no end, unless it is the one still building (`liveKey`). */
  finish(liveKey?: string): string {
    return this.current === liveKey ? '' : this.closeCurrent();
  }

  /** Whether every attempt reported its end. */
  complete(liveKey?: string): boolean {
    return [...this.attempts.entries()].every(([key, a]) => a.end !== undefined || key === liveKey);
  }

  private closeCurrent(): string {
    const info = this.current === undefined ? undefined : this.attempts.get(this.current);
    if (info === undefined || info.end !== undefined) return '';
    return `${incompleteMarker(info)}\n`;
  }
}

function incompleteMarker(info: Pick<LogAttemptInfo, 'worker' | 'jobId' | 'attempt'>): string {
  return `nixfarm: log incomplete: worker ${info.worker} stopped reporting (job ${info.jobId}, try ${info.attempt})`;
}
