import type { TimedLine } from './timed-process.js';

/** Nix's activity type of building one derivation (actBuild in libutil/logging.hh). */
const ACT_BUILD = 105;
/** A derivation goal's debug message each time Nix tries to start its build (local slot or build hook). */
const TRYING_TO_BUILD = /^building of '(\/nix\/store\/[^'!]+\.drv)![^']*' from \.drv file: trying to build$/;

/** One derivation's build as Nix logged it, times in ms since the epoch. */
export interface NixBuildSpan {
  drvPath: string;
  /** the last "trying to build" before the build started: the slot was free and Nix went for it (a build hook then picks a machine and connects) */
  triedAt: number;
  /** the build activity started: a local builder forked, or the hook accepted (machine chosen, SSH connected) */
  startedAt: number;
  /** the build activity stopped: outputs registered in the host store (for a remote build: copied back) */
  stoppedAt: number;
  /** `on 'ssh://...'` for a remote build, '' for a local one */
  machine: string;
}

interface InternalJsonMessage {
  action?: string;
  id?: number;
  type?: number;
  level?: number;
  msg?: string;
  fields?: unknown[];
}

/**
 * Per-derivation build spans from `nix-build --log-format internal-json -vvv`
 * stderr, timestamped on arrival. Needs -vvv (debug) for "trying to build";
 * without it triedAt falls back to startedAt.
 */
export function nixBuildSpans(lines: readonly TimedLine[]): NixBuildSpan[] {
  const lastTried = new Map<string, number>();
  const open = new Map<number, { drvPath: string; triedAt: number; startedAt: number; machine: string }>();
  const spans: NixBuildSpan[] = [];
  for (const line of lines) {
    if (!line.text.startsWith('@nix ')) continue;
    let message: InternalJsonMessage;
    try {
      message = JSON.parse(line.text.slice(5)) as InternalJsonMessage;
    } catch {
      continue; // a builder's own output line that happens to start with "@nix "
    }
    if (message.action === 'msg' && typeof message.msg === 'string') {
      const tried = TRYING_TO_BUILD.exec(message.msg);
      if (tried?.[1] !== undefined) lastTried.set(tried[1], line.at);
    } else if (message.action === 'start' && message.type === ACT_BUILD && typeof message.id === 'number') {
      const drvPath = message.fields?.[0];
      const machine = message.fields?.[1];
      if (typeof drvPath !== 'string') continue;
      open.set(message.id, { drvPath, triedAt: lastTried.get(drvPath) ?? line.at, startedAt: line.at, machine: typeof machine === 'string' ? machine : '' });
    } else if (message.action === 'stop' && typeof message.id === 'number') {
      const started = open.get(message.id);
      if (started === undefined) continue;
      open.delete(message.id);
      spans.push({ ...started, stoppedAt: line.at });
    }
  }
  return spans;
}
