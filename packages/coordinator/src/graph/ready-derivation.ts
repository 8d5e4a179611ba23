import type { BuildJob } from '@nixfarm/shared';
import { decodeNode, zipFields, type NodeField } from './derivation-node.js';

/** A derivation whose inputs are built: what queueing it needs. */
export interface ReadyDerivation {
  hash: string;
  queue: string;
  job: BuildJob;
  priority: number;
  /** attempts already started; a retry gets its own BullMQ job id so it never collides with the finished one */
  attempt: number;
  /** back-off before a retry may start */
  delayMs?: number;
  /** the derivation asks to be built where it is needed (preferLocalBuild) */
  preferLocalBuild?: boolean;
  /** expected work from this derivation to the end of its run, ms; absent in FIFO order */
  criticalPathMs?: number;
  /** the worker that built the input whose end released it: it holds that input, and is woken first (locality) */
  nearWorker?: string;
}

/** The node fields a ready derivation is queued with, in the order the Lua operations read them (HMGET). */
export const READY_FIELDS = ['queue', 'job', 'priority', 'attempts', 'preferLocal', 'criticalPath'] as const satisfies readonly NodeField[];

/** A ready derivation from its READY_FIELDS values (HMGET's order; Lua's false or Redis' nil for a missing field). */
export function readyFrom(hash: string, values: ReadonlyArray<string | null | false> | undefined): ReadyDerivation {
  const node = decodeNode(
    zipFields(
      READY_FIELDS,
      values?.map((v) => (v === false ? null : v)),
    ),
  );
  return {
    ...(node.criticalPath === undefined ? {} : { criticalPathMs: node.criticalPath }),
    hash,
    queue: node.queue ?? '',
    // Written at registration from the planner's job: our own data, checked again by the worker that takes it.
    job: (node.job ?? null) as BuildJob,
    priority: node.priority ?? 0,
    attempt: node.attempts ?? 0,
    preferLocalBuild: node.preferLocal === true,
  };
}
