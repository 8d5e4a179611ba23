import type { TimedLine } from './timed-process.js';

/** Nix's activity type of building one derivation (actBuild in libutil/logging.hh). */
const ACT_BUILD = 105;
/** A derivation goal's debug message each time Nix tries to start its build (local slot or build hook). */
const TRYING_TO_BUILD = /^building of '(\/nix\/store\/[^'!]+\.drv)![^']*' from \.drv file: trying to build$/;
/** The goal's debug message once its outputs are registered. Its build activity only stops when the goal is destroyed, which for a top-level goal is the end of nix-build. */
const GOAL_DONE = /^building of '(\/nix\/store\/[^'!]+\.drv)![^']*' from \.drv file: done$/;

/** One derivation's build as Nix logged it, times in ms since the epoch. */
export interface NixBuildSpan {
  drvPath: string;
  /** remote builds: the last "trying to build" before the build started (Nix went for it; the build hook then picks a machine and connects); local builds: startedAt */
  triedAt: number;
  /** the build activity started: a local builder forked, or the hook accepted (machine chosen, SSH connected) */
  startedAt: number;
  /** the goal was done (outputs registered in the host store; for a remote build: copied back), else its build activity stopped */
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
  const doneAt = new Map<string, number>();
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
      const done = GOAL_DONE.exec(message.msg);
      if (done?.[1] !== undefined && !doneAt.has(done[1])) doneAt.set(done[1], line.at);
    } else if (message.action === 'start' && message.type === ACT_BUILD && typeof message.id === 'number') {
      const drvPath = message.fields?.[0];
      const machine = message.fields?.[1];
      if (typeof drvPath !== 'string') continue;
      const remote = typeof machine === 'string' ? machine : '';
      // A local build waiting for a slot resumes without tracing "trying to build" again, so its last trace can be long
      // before the slot: a local build's span starts when its builder starts.
      const triedAt = remote === '' ? line.at : (lastTried.get(drvPath) ?? line.at);
      open.set(message.id, { drvPath, triedAt, startedAt: line.at, machine: remote });
    } else if (message.action === 'stop' && typeof message.id === 'number') {
      const started = open.get(message.id);
      if (started === undefined) continue;
      open.delete(message.id);
      spans.push({ ...started, stoppedAt: Math.min(line.at, doneAt.get(started.drvPath) ?? line.at) });
    }
  }
  return spans;
}
