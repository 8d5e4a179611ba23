/**
 * Every Redis key nixfarm uses outside BullMQ's own, in one place, so the
 * coordinator and the workers cannot disagree on a name. BullMQ's keys live
 * under the same prefix (BULLMQ_PREFIX), and so do the pub/sub channels: one
 * ACL key pattern and one channel pattern cover the whole farm.
 */
export const REDIS_PREFIX = 'nixfarm';

/** BullMQ's `prefix` option: its keys are `nixfarm:bull:QUEUE:...` instead of its default `bull:QUEUE:...`. */
export const BULLMQ_PREFIX = `${REDIS_PREFIX}:bull`;

/**
 * The connection options of every BullMQ Queue, Worker and QueueEvents
 * nixfarm makes: one place that puts their keys under BULLMQ_PREFIX (a queue
 * made without it would not see the farm's jobs, and would need `bull:*` in the ACLs).
 */
export function bullmqOptions<C>(connection: C): { connection: C; prefix: string } {
  return { connection, prefix: BULLMQ_PREFIX };
}

export const redisKeys = {
  /** HASH per derivation node in the build graph, keyed by the drv's hash part */
  drv: (hash: string) => `${REDIS_PREFIX}:drv:${hash}`,
  drvDependents: (hash: string) => `${REDIS_PREFIX}:drv:${hash}:dependents`,
  drvRuns: (hash: string) => `${REDIS_PREFIX}:drv:${hash}:runs`,
  run: (id: string) => `${REDIS_PREFIX}:run:${id}`,
  runDrvs: (id: string) => `${REDIS_PREFIX}:run:${id}:drvs`,
  runEvents: (id: string) => `${REDIS_PREFIX}:run:${id}:events`,
  /** LIST per jobset run: each attribute's evaluation result as JSON, in the order they were evaluated */
  runAttributes: (id: string) => `${REDIS_PREFIX}:run:${id}:attributes`,
  /** HASH per jobset run: its evaluation's progress (state, done, failed, discovered, discovering, startedAt, endedAt, error, builds:<outcome>) */
  runEvaluation: (id: string) => `${REDIS_PREFIX}:run:${id}:evaluation`,
  /** HASH per jobset run: derivation hash part -> how many of its evaluated attributes wait for that derivation's build to end */
  runPendingAttributes: (id: string) => `${REDIS_PREFIX}:run:${id}:pending-attributes`,
  /** HASH per run that publishes images: index of the requested output -> its ImagePublication as JSON */
  runImages: (id: string) => `${REDIS_PREFIX}:run:${id}:images`,
  /** ZSET of run ids by creation time */
  runs: `${REDIS_PREFIX}:runs`,
  /** SET of runs not finished yet: what a restarted coordinator resumes */
  activeRuns: `${REDIS_PREFIX}:runs:active`,
  /** STREAM of worker events (started, finished), read by the coordinator's consumer group */
  workerEvents: `${REDIS_PREFIX}:worker-events`,
  workerEventsGroup: 'coordinator',
  /** SET of build queue names that exist, for workers to discover */
  queues: `${REDIS_PREFIX}:queues`,
  /** PUB/SUB channel: a queue name, published when a job was added to it */
  queueWakeups: `${REDIS_PREFIX}:queue-wakeups`,
  /** PUB/SUB channel per worker: a queue name, published when a job that worker should take first (it holds the job's input) was added */
  workerWakeups: (worker: string) => `${REDIS_PREFIX}:queue-wakeups:${worker}`,
  /** PUB/SUB channel: the hash part of a derivation whose running build must stop */
  cancelBuilds: `${REDIS_PREFIX}:cancel-builds`,
  /** STRING per signing key and report session: the highest sequence number the coordinator accepted (signed-report.ts), to refuse replays */
  reportSession: (fingerprint: string, session: string) => `${REDIS_PREFIX}:report-session:${fingerprint}:${session}`,
  /** HASH: worker name -> fingerprint of the key that speaks for it, written by the coordinator only */
  workerKeys: `${REDIS_PREFIX}:worker-keys`,
  /** PUB/SUB channel: the fingerprint of a worker key the coordinator's operator revoked; that worker stops taking builds */
  revokedKeys: `${REDIS_PREFIX}:revoked-keys`,
  /** HASH: derivation name -> its last build time in ms, the weight of the critical path */
  durations: `${REDIS_PREFIX}:durations`,
  /** SET of worker names; per worker a JSON string (WorkerInfo), rewritten on each heartbeat */
  workers: `${REDIS_PREFIX}:workers`,
  worker: (name: string) => `${REDIS_PREFIX}:worker:${name}`,
  /** STREAM per derivation (hash part): its build log in batches of lines, each tagged with its attempt; an end entry per attempt */
  buildLog: (hash: string) => `${REDIS_PREFIX}:log:${hash}`,
  /** HASH: upload job id (cache id and output hash part) -> its UploadRecord as JSON */
  uploads: `${REDIS_PREFIX}:uploads`,
  /** SET per run: the upload job ids of its outputs */
  runUploads: (id: string) => `${REDIS_PREFIX}:run:${id}:uploads`,
  /** ZSET: upload job ids whose last attempt failed (retrying or given up), by the time of that attempt: the dashboard's upload failures */
  uploadsFailing: `${REDIS_PREFIX}:uploads:failing`,
  /** HASH: store path hash part -> store path, of every output the coordinator signed: what its binary cache serves */
  signedPaths: `${REDIS_PREFIX}:cache:signed-paths`,
  /** HASH: derivation hash part -> its latest reproducibility check (coordinator/src/checks/check-records.ts) as JSON */
  checks: `${REDIS_PREFIX}:checks`,
  /** SET of derivation hash parts whose check has not ended (waiting, queued, running) */
  checksActive: `${REDIS_PREFIX}:checks:active`,
  /** ZSET of derivation hash parts by the time their check ended: the newest checks */
  checksEnded: `${REDIS_PREFIX}:checks:ended`,
  /** ZSET of derivation hash parts by the time their check found a difference: the newest mismatches */
  checksMismatched: `${REDIS_PREFIX}:checks:mismatched`,
  /** HASH: ended check state -> how many checks ended so */
  checkCounts: `${REDIS_PREFIX}:checks:counts`,
  /** SET per run: hash parts of the derivations it asked to check */
  runChecks: (id: string) => `${REDIS_PREFIX}:run:${id}:checks`,
  /** SET of check queue names that exist (queue-name.ts's checkQueueNameFor), for workers to discover */
  checkQueues: `${REDIS_PREFIX}:check-queues`,
  /** LIST of the farm's history samples (HistorySample as JSON), oldest first, trimmed to 24 h and at most 8640 (coordinator/src/history/) */
  farmHistory: `${REDIS_PREFIX}:history`,
  /** LIST per differing output of a check: its gzip-compressed NAR in chunks, written by the worker, read and deleted by the coordinator (expires after an hour) */
  checkNar: (jobId: string, outputHash: string) => `${REDIS_PREFIX}:check-nar:${jobId}:${outputHash}`,
} as const;
