import { z } from 'zod';
import { buildStatusSchema, drvPathSchema, runIdSchema, runStatusSchema, storePathSchema, workerNameSchema } from './common.js';
import { buildTimingsSchema } from './worker-event.js';
import { evaluationProgressSchema } from './jobset.js';
import { CHECK_STATES, checkViewSchema } from './checks.js';
import { cacheUrlSchema } from '../cache-url.js';
import { imageRepositoryProblem, isLoopbackRegistry } from '../image-repository.js';

const nixIdentifier = z.string().regex(/^[A-Za-z_][A-Za-z0-9_'-]*$/, "a Nix identifier (letters, digits, _ ' -)");

/** POST /api/runs: what `nixfarm build` sends. Mirrors nix-build's flags. */
export const submitRunRequestSchema = z
  .object({
    file: z.string().min(1).max(4096).startsWith('/', 'file must be an absolute path on the coordinator machine').optional(),
    expr: z.string().min(1).max(1_000_000).optional(),
    attrs: z.array(z.string().min(1).max(1024)).max(10_000).default([]),
    args: z
      .array(z.object({ name: nixIdentifier, expr: z.string().max(100_000) }).strict())
      .max(1000)
      .default([]),
    argstrs: z
      .array(z.object({ name: nixIdentifier, value: z.string().max(100_000) }).strict())
      .max(1000)
      .default([]),
    includes: z.array(z.string().min(1).max(4096)).max(1000).default([]),
    /** where relative paths in expr and args resolve, as nix-build's working directory (must exist on the coordinator machine) */
    cwd: z.string().min(1).max(4096).startsWith('/', 'cwd must be an absolute path').optional(),
    priority: z.number().int().min(-1000).max(1000).default(0),
    /** the run's weight among runs of the same priority: its fair share of the slots (absent: 1) */
    share: z
      .number({ error: 'share must be a number' })
      .int('share must be a whole number')
      .min(1, 'share must be at least 1')
      .max(1000, 'share must be at most 1000')
      .optional(),
    /** ready builds: longest remaining chain first (default), or first come first served (for comparison) */
    order: z.enum(['critical-path', 'fifo']).default('critical-path'),
    /** build derivations that failed before instead of reporting cached-failure */
    rebuildFailed: z.boolean().default(false),
    /** build each requested derivation again on another worker (built first if need be) and compare the outputs: the run fails on a difference, as nix-build --check */
    check: z.boolean().optional(),
    /** per build, enforced by the worker's Nix (defaults as in the design: 10 h and 1 h) */
    timeoutSeconds: z
      .number()
      .int()
      .positive()
      .max(7 * 24 * 3600)
      .default(36_000),
    maxSilentSeconds: z
      .number()
      .int()
      .positive()
      .max(7 * 24 * 3600)
      .default(3600),
    /** more binary caches this run's outputs are uploaded to once built, besides the coordinator's --push-to */
    pushTo: z.array(cacheUrlSchema).max(16).optional(),
    /** the value is a jobset (a nested set of derivations): each attribute is evaluated, built and reported on its own, builds starting while evaluation goes on */
    jobset: z.boolean().optional(),
    /** jobset: a flake reference with the attribute after `#` (`.#checks.x86_64-linux`, `path:/srv/repo#hydraJobs`); a relative path resolves against cwd */
    flake: z.string().min(1).max(4096).optional(),
    /** jobset: enter every attribute set, not only those with recurseForDerivations = true (nix-eval-jobs' --force-recurse) */
    forceRecurse: z.boolean().optional(),
    /** jobset: evaluator processes at once (default: the coordinator's cores) */
    evalWorkers: z
      .number({ error: 'evalWorkers must be a number' })
      .int('evalWorkers must be a whole number')
      .min(1, 'evalWorkers must be at least 1')
      .max(64, 'evalWorkers must be at most 64')
      .optional(),
    /** jobset: each evaluator's heap bound in MiB (Boehm GC's GC_MAXIMUM_HEAP_SIZE) */
    evalMaxMemoryMiB: z
      .number({ error: 'evalMaxMemoryMiB must be a number' })
      .int('evalMaxMemoryMiB must be a whole number of MiB')
      .min(32, 'evalMaxMemoryMiB must be at least 32 (MiB)')
      .max(1_048_576, 'evalMaxMemoryMiB must be at most 1048576 (MiB)')
      .optional(),
    /** jobset: evaluate only: each attribute gets nix-eval-jobs' isCached and nothing is built; the run ends when evaluation ends */
    evalOnly: z.boolean().optional(),
    /** push every requested output that is an image (docker-archive or OCI layout) to this REGISTRY/REPO once the run ends, tagged ATTR-HASHPART */
    publishImages: z
      .string()
      .max(300)
      .superRefine((value, ctx) => {
        const problem = imageRepositoryProblem(value);
        if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
      })
      .optional(),
    /** with publishImages: the registry credentials, a containers-auth.json file on the coordinator machine (skopeo --authfile) */
    registryAuth: z.string().min(1).max(4096).startsWith('/', 'registryAuth must be an absolute path on the coordinator machine').optional(),
    /** with publishImages: plain HTTP without TLS verification, for a registry on loopback only */
    registryInsecure: z.boolean().optional(),
    /** with publishImages: also tag each image `latest` */
    tagLatest: z.boolean().optional(),
  })
  .strict()
  .refine((body) => [body.file, body.expr, body.flake].filter((v) => v !== undefined).length === 1, {
    message: 'give exactly one of file (an absolute path) or expr (a Nix expression), or with jobset: true a flake (a flake reference)',
  })
  .refine((body) => body.flake === undefined || (body.args.length === 0 && body.argstrs.length === 0), {
    message: "args and argstrs do not apply to a flake (its outputs take no arguments): put the values in the flake's outputs instead",
    path: ['flake'],
  })
  .refine((body) => body.jobset !== true || body.check !== true, {
    message:
      "check applies to a run of -A attributes, an expression or a file; a jobset's builds are checked in the background with the coordinator's --check-fraction",
    path: ['check'],
  })
  .refine((body) => body.jobset !== true || body.attrs.length === 0, {
    message: 'attrs cannot be given with jobset: a jobset run builds every attribute of the value',
    path: ['attrs'],
  })
  .refine(
    (body) =>
      body.jobset === true ||
      (body.forceRecurse === undefined &&
        body.evalWorkers === undefined &&
        body.evalMaxMemoryMiB === undefined &&
        body.flake === undefined &&
        body.evalOnly === undefined),
    {
      message: 'flake, evalOnly, forceRecurse, evalWorkers and evalMaxMemoryMiB apply only with jobset: true',
      path: ['jobset'],
    },
  )
  .refine(
    (body) => body.publishImages !== undefined || (body.registryAuth === undefined && body.registryInsecure === undefined && body.tagLatest === undefined),
    {
      message: 'registryAuth, registryInsecure and tagLatest apply only with publishImages (REGISTRY/REPO)',
      path: ['publishImages'],
    },
  )
  .refine((body) => body.registryInsecure !== true || body.publishImages === undefined || isLoopbackRegistry(body.publishImages.split('/')[0]!), {
    message:
      'registryInsecure turns TLS verification off, which is allowed only for a registry on loopback (127.0.0.1, localhost, [::1]): use https for others',
    path: ['registryInsecure'],
  });
export type SubmitRunRequest = z.infer<typeof submitRunRequestSchema>;

export const runResultSchema = z.object({
  attr: z.string(),
  drvPath: drvPathSchema,
  outputName: z.string(),
  outputPath: storePathSchema,
});
export type RunResult = z.infer<typeof runResultSchema>;

/** One requested output's image publication: waiting or retrying, pushed, not an image, or failed for good. */
export const imagePublicationSchema = z.object({
  attr: z.string(),
  outputPath: storePathSchema,
  state: z.enum(['pending', 'published', 'not-an-image', 'failed']),
  /** REGISTRY/REPO:TAG for each tag pushed (or to be pushed) */
  references: z.array(z.string()),
  /** the manifest digest the registry holds, once published */
  digest: z.string().optional(),
  /** tries made so far */
  attempts: z.number().int().nonnegative(),
  /** the last try's error: while pending it is being retried; when failed, why it ended */
  error: z.string().optional(),
});
export type ImagePublication = z.infer<typeof imagePublicationSchema>;

export const derivationViewSchema = z.object({
  drvPath: drvPathSchema,
  name: z.string(),
  system: z.string(),
  requiredFeatures: z.array(z.string()),
  status: buildStatusSchema,
  worker: workerNameSchema.optional(),
  pendingInputs: z.number().int(),
  attempts: z.number().int(),
  queuedAt: z.number().optional(),
  startedAt: z.number().optional(),
  finishedAt: z.number().optional(),
  timings: buildTimingsSchema.optional(),
  error: z.string().optional(),
  logTail: z.array(z.string()).optional(),
  /** successful builds reported (more than one: re-run after a lost lock, or a late duplicate); absent before the first */
  builds: z.number().int().optional(),
  /** the workers of those builds, in the order their reports were applied */
  builtBy: z.array(workerNameSchema).optional(),
  /** a build whose outputs had other NAR hashes than the coordinator's copy (the derivation is not reproducible); the run used the coordinator's copy */
  divergentBuild: z.string().optional(),
});
export type DerivationView = z.infer<typeof derivationViewSchema>;

export const runViewSchema = z.object({
  id: runIdSchema,
  status: runStatusSchema,
  createdAt: z.number(),
  finishedAt: z.number().optional(),
  request: z.unknown(),
  results: z.array(runResultSchema),
  total: z.number().int(),
  counts: z.record(z.string(), z.number().int()),
  error: z.string().optional(),
  /** a jobset run's evaluation: attributes done and failed so far, and whether it still runs */
  evaluation: evaluationProgressSchema.optional(),
  /** with publishImages: each requested output's publication, once the run has ended */
  images: z.array(imagePublicationSchema).optional(),
  /** with check: each requested derivation's reproducibility check */
  checks: z.array(checkViewSchema).optional(),
});
export type RunView = z.infer<typeof runViewSchema>;

export const runEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('run-started'), runId: runIdSchema, total: z.number().int(), at: z.number() }),
  z.object({ type: z.literal('drv-queued'), drvPath: drvPathSchema, queue: z.string(), at: z.number() }),
  z.object({
    type: z.literal('drv-unsupported'),
    drvPath: drvPathSchema,
    system: z.string(),
    requiredFeatures: z.array(z.string()),
    /** why each registered worker cannot take it; empty when no worker is registered */
    workers: z.array(z.object({ name: z.string(), reason: z.string() })),
    at: z.number(),
  }),
  z.object({ type: z.literal('drv-started'), drvPath: drvPathSchema, worker: workerNameSchema, at: z.number() }),
  /** a draining worker gave the build back unfinished; it is queued again for another worker (the try is not counted) */
  z.object({ type: z.literal('drv-handed-back'), drvPath: drvPathSchema, worker: workerNameSchema, reason: z.string(), at: z.number() }),
  /** the attempt on `worker` ended without an answer from the builder (an infrastructure fault): the build is queued again after `delayMs` */
  z.object({
    type: z.literal('drv-retrying'),
    drvPath: drvPathSchema,
    worker: workerNameSchema,
    error: z.string().optional(),
    /** tries so far, and how many the coordinator makes before the build ends as aborted */
    attempts: z.number().int().nonnegative(),
    maxAttempts: z.number().int().positive(),
    delayMs: z.number().nonnegative(),
    at: z.number(),
  }),
  z.object({
    type: z.literal('drv-finished'),
    drvPath: drvPathSchema,
    status: buildStatusSchema,
    worker: workerNameSchema.optional(),
    error: z.string().optional(),
    logTail: z.array(z.string()).optional(),
    at: z.number(),
  }),
  /** a reproducibility check of the derivation ended (the run asked for it with check) */
  z.object({
    type: z.literal('drv-checked'),
    drvPath: drvPathSchema,
    state: z.enum(CHECK_STATES),
    worker: workerNameSchema.optional(),
    error: z.string().optional(),
    at: z.number(),
  }),
  z.object({ type: z.literal('run-finished'), runId: runIdSchema, status: runStatusSchema, at: z.number() }),
]);
export type RunEvent = z.infer<typeof runEventSchema>;

export const apiErrorSchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });
export type ApiError = z.infer<typeof apiErrorSchema>;
