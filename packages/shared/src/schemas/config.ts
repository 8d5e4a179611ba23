import { z } from 'zod';
import { featureSchema, systemSchema, workerNameSchema } from './common.js';
import { cacheUrlSchema } from '../cache-url.js';
import { isSentinelUrl, parseSentinelUrl } from '../redis-sentinel.js';
import { DEFAULT_HISTORY_INTERVAL_SECONDS } from './history.js';

const logLevelSchema = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
const portSchema = z.number().int().min(0).max(65535);
const nixOptionSchema = z.tuple([
  z.string().regex(/^[a-z][a-z0-9-]*$/, 'a Nix option name is lower-case words joined by - (like max-silent-time)'),
  z.string().max(10_000),
]);
const redisUrlSchema = z
  .string()
  .regex(/^(rediss?|rediss?\+sentinel):\/\//, 'a Redis URL starts with redis://, rediss://, redis+sentinel:// or rediss+sentinel://')
  .superRefine((url, ctx) => {
    if (!isSentinelUrl(url)) return;
    try {
      parseSentinelUrl(url);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message, input: url });
    }
  });
/** TLS to an external Redis (rediss:// and rediss+sentinel:// URLs): shared/redis-tls.ts reads and checks the files */
const redisTlsFields = {
  /** PEM CA certificate(s) the Redis server's certificate must be signed by; absent: the system's CAs */
  redisCaFile: z.string().min(1).optional(),
  /** PEM client certificate, for a server with tls-auth-clients (only with redisKeyFile) */
  redisCertFile: z.string().min(1).optional(),
  /** PEM private key of redisCertFile, without a passphrase */
  redisKeyFile: z.string().min(1).optional(),
};

export const coordinatorConfigSchema = z
  .object({
    stateDir: z.string().min(1),
    /** absent: start a private redis-server from PATH with its data in stateDir */
    redisUrl: redisUrlSchema.optional(),
    ...redisTlsFields,
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
    /** external binary caches every succeeded run's outputs (with their closures and signatures) are uploaded to */
    pushTo: z.array(cacheUrlSchema).default([]),
    /** uploads running at once, over all caches */
    uploadConcurrency: z.number().int().min(1).max(64).default(2),
    /** the Nix signing key (`name:base64` secret) the coordinator signs farm outputs with; absent: <stateDir>/signing-key, made at first start */
    signingKeyFile: z.string().min(1).optional(),
    /** serve the binary cache (/cache) without a token */
    publicCache: z.boolean().default(false),
    logLevel: logLevelSchema.default('info'),
    /** tries per image pushed to a registry (runs with publishImages) before it is failed */
    imagePublishAttempts: z.number().int().min(1).max(100).default(6),
    /** the delay before an image push's first retry; each next one doubles */
    imagePublishBackoffMs: z.number().int().min(0).max(3_600_000).default(5000),
    /** the share of successful builds built again on another worker in the background, to check they are reproducible (0: none, 1: all) */
    checkFraction: z
      .number({ error: 'the check fraction must be a number from 0 to 1' })
      .min(0, 'the check fraction must be from 0 to 1 (0.05 checks one build in twenty)')
      .max(1, 'the check fraction must be from 0 to 1 (1 checks every build)')
      .default(0),
    /** a program run on each difference a check finds, with Nix's diff-hook arguments: the coordinator's output, the rebuilt copy, the .drv, a working directory */
    diffHook: z.string().min(1).max(4096).optional(),
    /** a differing output of a check is brought back to the coordinator only up to this NAR size (bytes) */
    checkMaxNarBytes: z
      .number()
      .int()
      .min(0)
      .max(64 * 1024 ** 3)
      .default(256 * 1024 ** 2),
    /** seconds between samples of the farm's history (the dashboard's charts, GET /api/history) */
    historyIntervalSeconds: z
      .number({ error: 'the history interval must be a whole number of seconds from 1 to 3600' })
      .int('the history interval must be a whole number of seconds from 1 to 3600')
      .min(1, 'the history interval must be from 1 to 3600 seconds (default 10)')
      .max(3600, 'the history interval must be from 1 to 3600 seconds (default 10)')
      .default(DEFAULT_HISTORY_INTERVAL_SECONDS),
  })
  .strict();
export type CoordinatorConfig = z.infer<typeof coordinatorConfigSchema>;
export type CoordinatorConfigInput = z.input<typeof coordinatorConfigSchema>;

/** Multipliers of the size suffixes Nix's own settings take (powers of 1024). */
const SIZE_SUFFIXES: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/** How a byte size may be written, for messages. */
const BYTE_SIZE_FORM = 'a whole number of bytes, optionally with a K, M or G suffix (powers of 1024, like 65536, 4K or 64M)';

/** A byte size as Nix's settings take it: plain bytes (a number, or a string of digits) or digits with a K, M or G suffix. Undefined: not that form. */
function parseByteSize(value: number | string): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  const m = /^\s*(\d+)\s*([kmg]?)\s*$/i.exec(value);
  if (m === null) return undefined;
  const bytes = Number(m[1]) * SIZE_SUFFIXES[m[2]!.toUpperCase()]!;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Nix's `max-log-size` for the worker's builds, and the cut of the log it streams: 64 MiB unless set. */
export const DEFAULT_MAX_LOG_SIZE = 64 * 1024 * 1024;
/** below 1K a log could not even hold Nix's first lines; above 4G it is no limit in practice (the log goes through Redis) */
const MAX_LOG_SIZE_MIN = 1024;
const MAX_LOG_SIZE_MAX = 4 * 1024 ** 3;

/** Bytes a build may log: accepts 4096, "4096", "4K", "64M", "1G"; parses to bytes. */
const maxLogSizeSchema = z.union([z.number(), z.string()], { error: `must be ${BYTE_SIZE_FORM}` }).transform((value, ctx) => {
  const bytes = parseByteSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `must be ${BYTE_SIZE_FORM}`, input: value });
    return z.NEVER;
  }
  if (bytes < MAX_LOG_SIZE_MIN || bytes > MAX_LOG_SIZE_MAX) {
    // Unlike Nix's, 0 does not mean "no limit": every log goes through Redis to the coordinator's store.
    const zero = bytes === 0 ? ' (0 is not "no limit" here, as it is in Nix: there is always one)' : '';
    ctx.addIssue({ code: 'custom', message: `must be from 1K to 4G${zero}; got ${JSON.stringify(value)}`, input: value });
    return z.NEVER;
  }
  return bytes;
});

/** How the worker's copies to and from the coordinator's store are compressed on the wire (see docs/performance.md, "Big closures"). */
export const COPY_COMPRESSIONS = ['none', 'zlib'] as const;
export type CopyCompression = (typeof COPY_COMPRESSIONS)[number];
const copyCompressionSchema = z.enum(COPY_COMPRESSIONS, {
  error: (issue) =>
    `must be none or zlib (SSH's zlib compression, for slow links), not ${JSON.stringify(issue.input)}${issue.input === 'zstd' ? ": zstd is not offered, SSH's zlib is what both ends speak without an extra process" : ''}`,
});

export const workerConfigSchema = z
  .object({
    name: workerNameSchema,
    redisUrl: redisUrlSchema,
    ...redisTlsFields,
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
    minFreeDiskMiB: z
      .number()
      .int()
      .min(0)
      .max(1024 * 1024 * 1024)
      .default(1024),
    /** Nix's max-log-size for builds here: a build that logs more ends as log-limit-exceeded, and its streamed log is cut there (bytes, or 4K/64M/1G) */
    maxLogSize: maxLogSizeSchema.default(DEFAULT_MAX_LOG_SIZE),
    /** compress the copy stream to and from the coordinator's store (both directions): for links slower than the machines' CPUs */
    copyCompression: copyCompressionSchema.default('none'),
    /** free slots and waiting jobs but no fetch for this long: the fetch loop is restarted on a new connection (0: no watchdog) */
    fetchWatchdogSeconds: z.number().int().min(0).max(86_400).default(30),
    logLevel: logLevelSchema.default('info'),
  })
  .strict();
export type WorkerConfig = z.infer<typeof workerConfigSchema>;
export type WorkerConfigInput = z.input<typeof workerConfigSchema>;
