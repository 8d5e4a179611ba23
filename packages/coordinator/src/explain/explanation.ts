import { comparePlacement, derivationName, describeIneligibility, describeStatus, ineligibilityReason, isTerminal, type BuildStatus } from '@nixfarm/shared';
import type { FairShareStanding } from '../dispatch/fair-share.js';

/**
 * `nixfarm why`: from what the graph, the queue and the worker directory say
 * about one derivation, one explanation an operator can act on. Pure: every
 * fact comes in as data (so it is unit-tested without Redis or workers), the
 * clock included.
 */

/** One node of the build graph, as stored in `nixfarm:drv:<hash>`. */
export interface NodeFacts {
  hash: string;
  drvPath: string;
  name: string;
  system: string;
  requiredFeatures: readonly string[];
  status: BuildStatus;
  /** inputs not built yet, as the graph counts them */
  pendingInputs: number;
  attempts: number;
  queue?: string;
  worker?: string;
  queuedAt?: number;
  startedAt?: number;
  finishedAt?: number;
  error?: string;
  logTail?: readonly string[];
  outputs?: Record<string, string>;
  /** the last time a leaving worker gave it back unfinished */
  handedBack?: { worker: string; reason: string; at: number };
  runs: ReadonlyArray<{ id: string; active: boolean }>;
}

/** An input derivation of the node; `status` undefined: not in the graph (its outputs were valid when a run was planned). */
export interface InputFacts {
  drvPath: string;
  status?: BuildStatus;
  worker?: string;
}

/** A registered worker as the directory lists it. */
export interface WorkerFacts {
  name: string;
  systems: readonly string[];
  supportedFeatures: readonly string[];
  mandatoryFeatures: readonly string[];
  maxJobs: number;
  speedFactor: number;
  running: number;
  heartbeatAt: number;
  alive: boolean;
  /** leaving: takes no new builds */
  draining?: boolean;
  /** why it takes no new builds for now (low on disk) */
  paused?: string;
  freeDiskBytes?: number;
}

/** BullMQ's view of the node's job: its state, and how much waits in the same queue. */
export interface QueueFacts {
  name: string;
  /** BullMQ job state; 'missing' when the queue holds no job for it */
  jobState?: string;
  /** for a delayed (backing-off) retry: when it may start */
  delayUntil?: number;
  /** jobs waiting in this queue (including this one) */
  waiting?: number;
  /** how the run it counts for stands in the fair shares of this queue (absent: not counted, e.g. just after a restart) */
  fairShare?: FairShareStanding;
}

export interface ExplainInput {
  node: NodeFacts;
  /** the node's input derivations; undefined when its .drv could not be read */
  inputs?: readonly InputFacts[];
  workers: readonly WorkerFacts[];
  queue?: QueueFacts;
  now: number;
}

export type WorkerVerdictKind = 'free' | 'busy' | 'draining' | 'paused' | 'gone' | 'ineligible';

export interface WorkerVerdict {
  name: string;
  verdict: WorkerVerdictKind;
  /** one phrase: "missing feature: kvm", "busy at 2/2", ... */
  reason: string;
  running: number;
  maxJobs: number;
  speedFactor: number;
  /** the free worker Nix's rule ranks first */
  preferred?: boolean;
}

/** A type, not an interface: the route's response schema is a loose object (an index signature), which only a type alias satisfies. */
export type InputVerdict = {
  drvPath: string;
  name: string;
  status: BuildStatus;
  description: string;
  worker?: string;
};

export interface Explanation {
  derivation: {
    hash: string;
    drvPath: string;
    name: string;
    system: string;
    requiredFeatures: string[];
    status: BuildStatus;
    statusDescription: string;
    attempts: number;
    queue?: string;
    outputs?: Record<string, string>;
    runs: Array<{ id: string; active: boolean }>;
  };
  /** the answer, in one sentence */
  summary: string;
  /** waiting: the inputs not built yet */
  waitingFor?: InputVerdict[];
  /** queued or unsupported: every registered worker and why it has not taken the build */
  workers?: WorkerVerdict[];
  running?: { worker: string; since?: number; seconds?: number; workerAlive?: boolean };
  result?: { status: BuildStatus; description: string; worker?: string; finishedAt?: number; error?: string; logTail?: string[] };
  queue?: QueueFacts;
  /** extra observations (a previous attempt's error, a missing queue job, ...) */
  notes: string[];
}

/** The placement rule, as said to operators (Nix's build-remote, without Hydra's rounding). */
const PLACEMENT_RULE = "among free capable workers Nix's rule picks the lowest load/speed factor, then the higher speed factor, then the lower load";

const VERDICT_ORDER: Record<WorkerVerdictKind, number> = { free: 0, busy: 1, paused: 2, draining: 3, gone: 4, ineligible: 5 };

function seconds(ms: number): number {
  return Math.max(0, Math.round(ms / 1000));
}

function features(list: readonly string[]): string {
  return list.length === 0 ? 'no required features' : `features ${list.join(', ')}`;
}

/** Each worker's reason, in Nix's terms first (it can never build it), then liveness, then load. */
export function judgeWorkers(node: Pick<NodeFacts, 'system' | 'requiredFeatures'>, workers: readonly WorkerFacts[], now: number): WorkerVerdict[] {
  const requirement = { system: node.system, requiredFeatures: node.requiredFeatures };
  const verdicts: WorkerVerdict[] = workers.map((w) => {
    const base = { name: w.name, running: w.running, maxJobs: w.maxJobs, speedFactor: w.speedFactor };
    const why = ineligibilityReason(w, requirement);
    if (why !== undefined) return { ...base, verdict: 'ineligible', reason: describeIneligibility(why) };
    if (!w.alive) return { ...base, verdict: 'gone', reason: `gone: no heartbeat for ${seconds(now - w.heartbeatAt)} s` };
    if (w.draining === true)
      return {
        ...base,
        verdict: 'draining',
        reason: `draining: it is leaving and takes no new builds (its ${w.running} running build(s) finish or go back to the queue)`,
      };
    if (w.paused !== undefined) return { ...base, verdict: 'paused', reason: `paused: takes no new builds until it resumes by itself: ${w.paused}` };
    if (w.running >= w.maxJobs) return { ...base, verdict: 'busy', reason: `busy at ${w.running}/${w.maxJobs}` };
    return { ...base, verdict: 'free', reason: `eligible and free (${w.running}/${w.maxJobs} jobs, speed factor ${w.speedFactor})` };
  });
  verdicts.sort(
    (a, b) => VERDICT_ORDER[a.verdict] - VERDICT_ORDER[b.verdict] || (a.verdict === 'free' ? comparePlacement(a, b) : 0) || a.name.localeCompare(b.name),
  );
  const first = verdicts[0];
  if (first !== undefined && first.verdict === 'free') first.preferred = true;
  return verdicts;
}

function inputVerdicts(inputs: readonly InputFacts[]): InputVerdict[] {
  const out: InputVerdict[] = [];
  for (const i of inputs) {
    if (i.status === undefined || i.status === 'succeeded') continue;
    out.push({
      drvPath: i.drvPath,
      name: derivationName(i.drvPath),
      status: i.status,
      description: describeStatus(i.status),
      ...(i.worker === undefined || i.status !== 'running' ? {} : { worker: i.worker }),
    });
  }
  // the ones closest to done first: running, queued, then those still waiting themselves
  const order = (s: BuildStatus) => (s === 'running' ? 0 : s === 'queued' ? 1 : s === 'waiting' ? 2 : 3);
  return out.sort((a, b) => order(a.status) - order(b.status) || a.name.localeCompare(b.name));
}

function inputPhrase(i: InputVerdict): string {
  if (i.status === 'running') return `${i.name} (running${i.worker === undefined ? '' : ` on ${i.worker}`})`;
  return `${i.name} (${i.status})`;
}

function listed<T>(items: readonly T[], show: (item: T) => string, max = 5): string {
  const shown = items.slice(0, max).map(show).join(', ');
  return items.length > max ? `${shown} and ${items.length - max} more` : shown;
}

function explainWaiting(input: ExplainInput, e: Explanation): void {
  const { node } = input;
  if (input.inputs === undefined) {
    e.summary = `waiting for ${node.pendingInputs} input${node.pendingInputs === 1 ? '' : 's'} to be built (its .drv could not be read to name them)`;
    return;
  }
  const waiting = inputVerdicts(input.inputs);
  e.waitingFor = waiting;
  if (waiting.length === 0) {
    e.summary =
      node.pendingInputs > 0
        ? `waiting for ${node.pendingInputs} input${node.pendingInputs === 1 ? '' : 's'}, but every input is built: it should be queued at once`
        : 'waiting, but no input is left to build: it should be queued at once';
    return;
  }
  e.summary = `waiting for ${waiting.length} input${waiting.length === 1 ? '' : 's'} to be built: ${listed(waiting, inputPhrase)}`;
  const broken = waiting.filter((i) => isTerminal(i.status));
  if (broken.length > 0)
    e.notes.push(`input${broken.length === 1 ? '' : 's'} ended without success: ${listed(broken, inputPhrase)}; it will end dependency-failed`);
}

function explainReady(input: ExplainInput, e: Explanation): void {
  const { node, workers, now } = input;
  const verdicts = judgeWorkers(node, workers, now);
  e.workers = verdicts;
  const want = `system ${node.system}, ${features(node.requiredFeatures)}`;
  const capable = verdicts.filter((v) => v.verdict !== 'ineligible');
  const free = verdicts.filter((v) => v.verdict === 'free');
  const busy = verdicts.filter((v) => v.verdict === 'busy');
  const notTaking = verdicts.filter((v) => v.verdict === 'draining' || v.verdict === 'paused');
  const unsupported = node.status === 'unsupported';
  const lead = unsupported ? `${describeStatus(node.status)}` : 'ready';
  const queue = input.queue;

  if (queue?.jobState === 'delayed') {
    const until = queue.delayUntil === undefined ? '' : ` for ${seconds(queue.delayUntil - now)} s more`;
    e.notes.push(`retrying after an infrastructure fault: backing off${until}${node.error === undefined ? '' : ` (last error: ${node.error})`}`);
  } else if (node.attempts > 0 && node.error !== undefined) {
    e.notes.push(`attempt ${node.attempts} ended with: ${node.error}; queued again`);
  }
  if (node.handedBack !== undefined) {
    const h = node.handedBack;
    e.notes.push(
      `handed back unfinished by ${h.worker} at ${new Date(h.at).toISOString()} (${h.reason}); queued again for another worker, the try not counted`,
    );
  }
  if (queue?.jobState === 'missing') e.notes.push(`its job is missing from queue ${queue.name}: a restarted coordinator queues it again`);
  if (queue?.jobState === 'active') e.notes.push('a worker has just taken its job; the start is not recorded yet');
  if (queue?.waiting !== undefined && queue.waiting > 1) e.notes.push(`${queue.waiting} builds wait in queue ${queue.name}`);
  const fair = queue?.fairShare === undefined ? undefined : fairShareNote(queue.fairShare);
  if (fair !== undefined) e.notes.push(fair);

  if (verdicts.length === 0) {
    e.summary = `${lead}, but no worker is registered: start one with \`nixfarm worker\` (it needs ${want})`;
  } else if (capable.length === 0) {
    e.summary = `${lead}: no registered worker can ever build it (${want}): ${listed(verdicts, (v) => `${v.name}: ${v.reason}`, 10)}`;
  } else if (free.length > 0) {
    const best = free[0]!;
    const others = free.length > 1 ? ` (${free.length} capable workers are free: ${PLACEMENT_RULE}; ${best.name} ranks first)` : '';
    e.summary = `${lead}: ${best.name} is eligible and free, so it should be taken within seconds; a faster worker may be preferred${others}`;
    if (free.length === 1) e.notes.push(`placement: ${PLACEMENT_RULE}; a free worker leaves a build to a better-placed free one for a short grace time`);
  } else if (busy.length > 0 && notTaking.length === 0) {
    e.summary = `${lead}, waiting for a free slot: every capable live worker is busy (${listed(busy, (v) => `${v.name} ${v.running}/${v.maxJobs}`)})`;
  } else if (busy.length > 0) {
    e.summary = `${lead}, waiting for a free slot: every capable live worker is busy or takes no new builds (${listed([...busy, ...notTaking], (v) =>
      v.verdict === 'busy' ? `${v.name} ${v.running}/${v.maxJobs}` : `${v.name} ${v.reason}`,
    )})`;
  } else if (notTaking.length > 0) {
    e.summary = `${lead}, waiting: no capable live worker takes new builds now (${listed(notTaking, (v) => `${v.name} ${v.reason}`)}); a paused worker resumes by itself, a draining one is leaving: start another worker if none comes back`;
  } else {
    e.summary = `${lead}, but every worker that could build it is gone (${listed(capable, (v) => `${v.name}: ${v.reason}`)}): start or fix one of them`;
  }
}

function explainRunning(input: ExplainInput, e: Explanation): void {
  const { node, workers, now } = input;
  const worker = node.worker ?? '(unknown worker)';
  const listing = workers.find((w) => w.name === node.worker);
  const secs = node.startedAt === undefined ? undefined : seconds(now - node.startedAt);
  e.running = {
    worker,
    ...(node.startedAt === undefined ? {} : { since: node.startedAt, seconds: secs }),
    ...(listing === undefined ? {} : { workerAlive: listing.alive }),
  };
  const since = node.startedAt === undefined ? '' : ` since ${new Date(node.startedAt).toISOString()} (${secs} s)`;
  const attempt = node.attempts > 1 ? `, attempt ${node.attempts}` : '';
  e.summary = `building on ${worker}${since}${attempt}`;
  if (listing === undefined) e.notes.push(`${worker} is not registered any more: the build is retried when its job's lock expires`);
  else if (!listing.alive)
    e.notes.push(`${worker} has sent no heartbeat for ${seconds(now - listing.heartbeatAt)} s: if it is lost, the build is retried (aborted)`);
  else if (listing.draining === true)
    e.notes.push(`${worker} is draining: it finishes this build within its drain timeout, or hands it back to the queue for another worker`);
  else if (listing.paused !== undefined) e.notes.push(`${worker} is paused (${listing.paused}): it takes no new builds; this one goes on`);
}

function explainEnded(input: ExplainInput, e: Explanation): void {
  const { node } = input;
  e.result = {
    status: node.status,
    description: describeStatus(node.status),
    ...(node.worker === undefined ? {} : { worker: node.worker }),
    ...(node.finishedAt === undefined ? {} : { finishedAt: node.finishedAt }),
    ...(node.error === undefined ? {} : { error: node.error }),
    ...(node.logTail === undefined || node.logTail.length === 0 ? {} : { logTail: [...node.logTail] }),
  };
  const where = node.worker === undefined ? '' : ` on ${node.worker}`;
  const when = node.finishedAt === undefined ? '' : ` at ${new Date(node.finishedAt).toISOString()}`;
  e.summary = `${node.status}${where}${when}: ${describeStatus(node.status)}${node.error === undefined ? '' : ` (${node.error})`}`;
  if (node.status === 'failed' || node.status === 'cached-failure')
    e.notes.push('a failed build is remembered: submit again with --rebuild-failed to retry it');
}

export function explainDerivation(input: ExplainInput): Explanation {
  const { node } = input;
  const e: Explanation = {
    derivation: {
      hash: node.hash,
      drvPath: node.drvPath,
      name: node.name,
      system: node.system,
      requiredFeatures: [...node.requiredFeatures],
      status: node.status,
      statusDescription: describeStatus(node.status),
      attempts: node.attempts,
      ...(node.queue === undefined ? {} : { queue: node.queue }),
      ...(node.outputs === undefined ? {} : { outputs: node.outputs }),
      runs: node.runs.map((r) => ({ ...r })),
    },
    summary: '',
    notes: [],
  };
  if (input.queue !== undefined && (node.status === 'queued' || node.status === 'unsupported')) e.queue = input.queue;
  switch (node.status) {
    case 'waiting':
      explainWaiting(input, e);
      break;
    case 'queued':
      explainReady(input, e);
      break;
    case 'running':
      explainRunning(input, e);
      break;
    case 'unsupported':
      // ended for now, but a capable worker that registers later still takes it: show why none can
      explainReady(input, e);
      explainEnded(input, e);
      e.summary = `unsupported: ${describeStatus(node.status)} (system ${node.system}, ${features(node.requiredFeatures)})${
        e.workers?.length ? `: ${listed(e.workers, (v) => `${v.name}: ${v.reason}`, 10)}` : ': no worker is registered'
      }`;
      break;
    default:
      explainEnded(input, e);
  }
  if (node.runs.length > 0 && node.runs.every((r) => !r.active) && !isTerminal(node.status)) {
    e.notes.push('no active run needs it any more');
  }
  return e;
}

/** Why the build is ahead of or behind other runs' builds of its priority; nothing for a run alone in its queue. */
function fairShareNote(f: FairShareStanding): string | undefined {
  if (f.runs < 2 && !f.boosted) return undefined;
  const share = Number.isInteger(f.share) ? String(f.share) : f.share.toFixed(1);
  const holds = `run ${f.runId} holds ${f.claimed} of its fair share of ${share} of the ${f.slots} slots (${f.runs} runs of its priority have builds for this queue)`;
  return f.boosted
    ? `fair share: ${holds}; this build was below its share, so it is boosted ahead of the unboosted builds of its priority`
    : `fair share: ${holds}; it waits behind builds of runs below their share, and is boosted when its run falls below its own`;
}

/** The human-readable form `nixfarm why` prints. */
export function formatExplanation(e: Explanation): string {
  const d = e.derivation;
  const lines: string[] = [];
  lines.push(d.drvPath);
  lines.push(`  status:   ${d.status} (${d.statusDescription})`);
  lines.push(`  needs:    system ${d.system}, ${features(d.requiredFeatures)}${d.queue === undefined ? '' : ` (queue ${d.queue})`}`);
  if (d.outputs !== undefined) for (const [name, path] of Object.entries(d.outputs)) lines.push(`  output:   ${name} ${path}`);
  if (d.runs.length > 0) lines.push(`  runs:     ${d.runs.map((r) => `${r.id}${r.active ? ' (active)' : ''}`).join(', ')}`);
  lines.push('');
  lines.push(`Why: ${e.summary}`);
  if (e.waitingFor !== undefined && e.waitingFor.length > 0) {
    lines.push('', 'Waiting for:');
    for (const i of e.waitingFor) lines.push(`  ${i.status.padEnd(18)} ${i.drvPath}${i.worker === undefined ? '' : ` on ${i.worker}`}`);
    lines.push(`  (\`nixfarm why ${e.waitingFor[0]!.drvPath}\` explains an input in turn)`);
  }
  if (e.workers !== undefined && e.workers.length > 0) {
    lines.push('', 'Workers:');
    const width = Math.max(...e.workers.map((w) => w.name.length));
    for (const w of e.workers) lines.push(`  ${w.name.padEnd(width)}  ${w.verdict.padEnd(10)}  ${w.reason}${w.preferred ? '  <- preferred' : ''}`);
  }
  if (e.result !== undefined) {
    if (e.result.worker !== undefined) lines.push(`Worker: ${e.result.worker}`);
    if (e.result.error !== undefined) lines.push(`Error: ${e.result.error}`);
    if (e.result.logTail !== undefined) {
      lines.push('Log tail:');
      for (const l of e.result.logTail) lines.push(`  | ${l}`);
    }
  }
  if (e.notes.length > 0) {
    lines.push('');
    for (const n of e.notes) lines.push(`Note: ${n}`);
  }
  return `${lines.join('\n')}\n`;
}
