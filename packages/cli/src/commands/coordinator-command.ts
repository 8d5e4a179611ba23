import { Command } from 'commander';
import { coordinatorConfigSchema, createLogger, redactRedisUrl } from '@nixfarm/shared';
import { collect, integer, loadConfig, number, parseNixOption } from '../config-loader.js';
import { waitForShutdownSignal } from '../shutdown.js';
import { cliRedisWait } from '../redis-wait.js';
import { redisSettingsFromFlags, withRedisOptions } from '../redis-flags.js';
import { DEFAULT_COORDINATOR_STATE } from '../api-token-source.js';

export { DEFAULT_COORDINATOR_STATE };

export function coordinatorCommand(): Command {
  const command = new Command('coordinator')
    .description('run the coordinator: HTTP API, evaluation, the build graph, queues and the SSH endpoint for its Nix store')
    .option('--config <file>', 'JSON file with any of the options below (camelCase keys); flags override it')
    .option('--state-dir <dir>', `host key, authorized_keys, API tokens, embedded Redis data (default ${DEFAULT_COORDINATOR_STATE})`);
  return withRedisOptions(
    command,
    'Redis URL (redis://host:port, rediss://host:port for TLS, or redis+sentinel://host:port,host:port/MASTER, rediss+sentinel:// for TLS); without it a private redis-server is started in the state dir',
  )
    .option('--http-host <host>', 'HTTP API address (default 127.0.0.1)')
    .option('--http-port <port>', 'HTTP API port (default 8420; 0 picks a free one)', integer('--http-port'))
    .option('--ssh-host <host>', 'SSH store endpoint address (default 0.0.0.0)')
    .option('--ssh-port <port>', 'SSH store endpoint port (default 2222; 0 picks a free one)', integer('--ssh-port'))
    .option('--gc-roots-dir <dir>', 'where run and result GC roots live (default /nix/var/nix/gcroots/nixfarm)')
    .option(
      '--log-dir <dir>',
      "Nix's log directory: build logs are stored under drvs/ there for nixfarm log and nix-store --read-log (default $NIX_LOG_DIR, else /nix/var/log/nix)",
    )
    .option('--nix-option <name=value>', 'extra Nix option for evaluation and local builds, repeatable', parseNixOption)
    .option('--no-local-builds', 'send preferLocalBuild derivations to workers too, instead of building them here')
    .option('--local-max-jobs <n>', 'preferLocalBuild derivations built here at once (default 2)', integer('--local-max-jobs'))
    .option(
      '--push-to <url>',
      "upload each succeeded run's outputs with their closures and signatures to this cache (file:///dir, http(s)://..., s3://bucket?endpoint=...&region=...), repeatable",
      collect,
    )
    .option('--upload-concurrency <n>', 'uploads to external caches at once (default 2)', integer('--upload-concurrency'))
    .option(
      '--signing-key <file>',
      'Nix secret key (nix-store --generate-binary-cache-key) to sign farm outputs with, mode 600 (default: <state-dir>/signing-key, made at first start)',
    )
    .option('--public-cache', 'serve the binary cache (/cache) without a token')
    .option(
      '--image-publish-attempts <n>',
      'tries per image pushed to a registry (build --publish-images) before it is failed (default 6)',
      integer('--image-publish-attempts'),
    )
    .option(
      '--image-publish-backoff-ms <ms>',
      "delay before an image push's first retry; each next one doubles (default 5000)",
      integer('--image-publish-backoff-ms'),
    )
    .option(
      '--check-fraction <f>',
      'build this share of successful builds again on another worker in the background to check they are reproducible, 0 to 1 (default 0)',
      number('--check-fraction'),
    )
    .option(
      '--diff-hook <program>',
      "run this program on each difference a check finds, with Nix's diff-hook arguments: the coordinator's output, the rebuilt copy, the .drv, a working directory",
    )
    .option(
      '--check-max-nar-bytes <n>',
      'a differing output is brought back to show the difference only up to this NAR size (default 268435456)',
      integer('--check-max-nar-bytes'),
    )
    .option(
      '--history-interval-seconds <s>',
      "seconds between samples of the farm's history, which the dashboard charts (default 10; 24 h of samples are kept, at most 8640)",
      integer('--history-interval-seconds'),
    )
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
    .addHelpText('after', '\nExample:\n  nixfarm coordinator --state-dir /var/lib/nixfarm --redis redis://127.0.0.1:6379 --http-port 8420 --ssh-port 2222')
    .action(async (flags: Record<string, unknown>) => {
      const config = await loadConfig(
        coordinatorConfigSchema,
        flags.config as string | undefined,
        {
          stateDir: flags.stateDir,
          ...redisSettingsFromFlags(flags),
          httpHost: flags.httpHost,
          httpPort: flags.httpPort,
          sshHost: flags.sshHost,
          sshPort: flags.sshPort,
          gcRootsDir: flags.gcRootsDir,
          logDir: flags.logDir,
          nixOptions: flags.nixOption,
          localBuilds: flags.localBuilds === false ? false : undefined,
          localMaxJobs: flags.localMaxJobs,
          pushTo: flags.pushTo,
          uploadConcurrency: flags.uploadConcurrency,
          signingKeyFile: flags.signingKey,
          publicCache: flags.publicCache === true ? true : undefined,
          imagePublishAttempts: flags.imagePublishAttempts,
          imagePublishBackoffMs: flags.imagePublishBackoffMs,
          checkFraction: flags.checkFraction,
          diffHook: flags.diffHook,
          checkMaxNarBytes: flags.checkMaxNarBytes,
          historyIntervalSeconds: flags.historyIntervalSeconds,
          logLevel: flags.logLevel,
        },
        'coordinator config',
        { stateDir: DEFAULT_COORDINATOR_STATE },
      );
      const logger = createLogger({ name: 'coordinator', level: config.logLevel });
      const { Coordinator } = await import('@nixfarm/coordinator');
      const redisWait = cliRedisWait('nixfarm coordinator');
      const coordinator = new Coordinator({ config, logger, redisWait: redisWait.hooks });
      const address = await redisWait.during(coordinator.start());
      process.stderr.write(
        `nixfarm coordinator ready\n  API:       ${address.httpUrl}\n  Redis:     ${redactRedisUrl(address.redisUrl)}\n  SSH store: ${address.sshHost}:${address.sshPort}\n  host key:  ${address.hostKey}\n  API tokens: ${address.apiTokenFiles.admin} (admin), ${address.apiTokenFiles.read} (read); \`nixfarm api-token\` prints one\n  cache:     ${address.cacheUrl} (trusted-public-keys = ${address.cacheKey})\n`,
      );
      await waitForShutdownSignal();
      await coordinator.stop();
    });
}
