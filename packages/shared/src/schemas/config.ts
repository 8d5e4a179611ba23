import { z } from 'zod';
import { featureSchema, systemSchema, workerNameSchema } from './common.js';

const logLevelSchema = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
const portSchema = z.number().int().min(0).max(65535);
const nixOptionSchema = z.tuple([
  z.string().regex(/^[a-z][a-z0-9-]*$/, 'a Nix option name is lower-case words joined by - (like max-silent-time)'),
  z.string().max(10_000),
]);
const redisUrlSchema = z.string().regex(/^rediss?:\/\//, 'a Redis URL starts with redis:// or rediss://');

export const coordinatorConfigSchema = z
  .object({
    stateDir: z.string().min(1),
    /** absent: start a private redis-server from PATH with its data in stateDir */
    redisUrl: redisUrlSchema.optional(),
    httpHost: z.string().min(1).default('127.0.0.1'),
    httpPort: portSchema.default(8420),
    sshHost: z.string().min(1).default('0.0.0.0'),
    sshPort: portSchema.default(2222),
    /** a directory under Nix's gcroots: every symlink in it keeps its target alive */
    gcRootsDir: z.string().min(1).default('/nix/var/nix/gcroots/nixfarm'),
    /** build preferLocalBuild derivations on the coordinator itself, as Nix does, instead of sending them to workers */
    localBuilds: z.boolean().default(true),
    /** local builds at once */
    localMaxJobs: z.number().int().min(1).max(64).default(2),
    /** Nix's log directory, where build logs are stored for `nix-store --read-log` (default NIX_LOG_DIR, else /nix/var/log/nix) */
    logDir: z.string().min(1).optional(),
    /** extra `--option NAME VALUE` for the coordinator's own Nix calls */
    nixOptions: z.array(nixOptionSchema).default([]),
    logLevel: logLevelSchema.default('info'),
  })
  .strict();
export type CoordinatorConfig = z.infer<typeof coordinatorConfigSchema>;
export type CoordinatorConfigInput = z.input<typeof coordinatorConfigSchema>;

export const workerConfigSchema = z
  .object({
    name: workerNameSchema,
    redisUrl: redisUrlSchema,
    /** the coordinator's SSH endpoint for its Nix store */
    coordinatorHost: z.string().min(1),
    coordinatorPort: portSchema.default(2222),
    /** the coordinator's host key, `ssh-ed25519 AAAA...`, pinned: a different key is refused */
    coordinatorHostKey: z.string().regex(/^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/=]+( .*)?$/, 'a public key line like "ssh-ed25519 AAAA..."'),
    stateDir: z.string().min(1),
    systems: z.array(systemSchema).min(1, 'a worker needs at least one system (like x86_64-linux)'),
    supportedFeatures: z.array(featureSchema).default([]),
    mandatoryFeatures: z.array(featureSchema).default([]),
    maxJobs: z.number().int().min(1).max(1024).default(1),
    speedFactor: z.number().positive().max(1_000_000).default(1),
    nixOptions: z.array(nixOptionSchema).default([]),
    /** how long a job stays claimed without renewal: a worker that dies is noticed within this plus the stalled check, and its build re-run elsewhere */
    lockSeconds: z.number().int().min(2).max(3600).default(30),
    /** after SIGTERM/SIGINT: how long running builds may go on before they are handed back to the queue */
    drainSeconds: z.number().int().min(0).max(86_400).default(300),
    /** below this much free space on the Nix store's filesystem the worker takes no new builds (MiB; 0: no floor) */
    minFreeDiskMiB: z.number().int().min(0).max(1024 * 1024 * 1024).default(1024),
    logLevel: logLevelSchema.default('info'),
  })
  .strict();
export type WorkerConfig = z.infer<typeof workerConfigSchema>;
export type WorkerConfigInput = z.input<typeof workerConfigSchema>;
