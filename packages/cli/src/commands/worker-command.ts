import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { createLogger, workerConfigSchema, type NixfarmError } from '@nixfarm/shared';
import { CliError } from '../exit-codes.js';
import { commaList, integer, loadConfig, number, parseNixOption, collect } from '../config-loader.js';
import { listenForShutdownSignals } from '../shutdown.js';
import { hostSystem } from '../host-system.js';
import { cliRedisWait } from '../redis-wait.js';
import { redisSettingsFromFlags, withRedisOptions } from '../redis-flags.js';

export const DEFAULT_WORKER_STATE = path.join(os.homedir(), '.local', 'state', 'nixfarm', 'worker');

interface CoordinatorFile {
  redisUrl: string;
  redisCaFile?: string;
  sshPort: number;
  hostKey: string;
}

/** `--join DIR` reads the coordinator.json a coordinator writes: handy when both run on one machine (demo, tests). */
async function readCoordinatorFile(dir: string): Promise<CoordinatorFile> {
  const file = path.join(dir, 'coordinator.json');
  try {
    return JSON.parse(await readFile(file, 'utf8')) as CoordinatorFile;
  } catch (error) {
    throw new CliError(`cannot read ${file} (${(error as Error).message}): is a coordinator running with --state-dir ${dir}?`);
  }
}

function splitHostPort(value: string): { host: string; port?: number } {
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(value);
  if (m === null || m[1] === undefined) throw new CliError(`--coordinator takes HOST or HOST:PORT, got ${JSON.stringify(value)}`);
  return { host: m[1], ...(m[2] === undefined ? {} : { port: Number(m[2]) }) };
}

export function workerCommand(): Command {
  const command = new Command('worker')
    .description('run a worker: take build jobs this machine may build, build them with Nix, copy outputs back to the coordinator')
    .option('--config <file>', 'JSON file with any of the options below (camelCase keys); flags override it')
    .option('--name <name>', 'worker name, unique in the farm (default: host name)');
  return withRedisOptions(
    command,
    "the coordinator's Redis (redis://host:port, rediss://host:port for TLS, or redis+sentinel://host:port,host:port/MASTER, rediss+sentinel:// for TLS)",
  )
    .option('--coordinator <host[:port]>', "the coordinator's SSH store endpoint (default port 2222)")
    .option('--host-key <line>', 'the coordinator\'s SSH host key, "ssh-ed25519 AAAA..." (pinned; shown when the coordinator starts)')
    .option('--host-key-file <file>', "file holding the coordinator's host key (its ssh_host_ed25519_key.pub)")
    .option('--join <coordinator-state-dir>', 'take Redis URL (and its --redis-ca), SSH port and host key from a coordinator on this machine')
    .option('--state-dir <dir>', `worker key and SSH client config (default ${DEFAULT_WORKER_STATE})`)
    .option('--system <system>', "a system this worker builds for, repeatable (default: this machine's)", collect)
    .option('--features <list>', 'supported system features, comma-separated (like kvm,big-parallel)', commaList)
    .option('--mandatory-features <list>', 'features a build must require to run here, comma-separated', commaList)
    .option('--max-jobs <n>', 'builds at once (default 1)', integer('--max-jobs'))
    .option('--speed-factor <n>', 'relative speed; faster workers are preferred (default 1)', number('--speed-factor'))
    .option('--nix-option <name=value>', 'Nix option for every build, repeatable (like sandbox=true)', parseNixOption)
    .option('--lock-seconds <n>', 'a job claimed by a worker that stops renewing it for this long is re-run elsewhere (default 30)', integer('--lock-seconds'))
    .option(
      '--drain-seconds <n>',
      'on SIGTERM/Ctrl-C: take no new builds, let running ones finish for up to this long, then hand them back to the queue; a second signal hands them back at once (default 300)',
      integer('--drain-seconds'),
    )
    .option(
      '--min-free-disk <MiB>',
      "take no new builds while the Nix store's filesystem has less free space than this; resume when it is back (default 1024, 0: no floor)",
      integer('--min-free-disk'),
    )
    .option(
      '--max-log-size <bytes>',
      "Nix's max-log-size for builds here: a build that logs more ends as log-limit-exceeded, and its stored log is cut there; bytes, or with a K, M or G suffix like 64M (default 64M)",
    )
    .option(
      '--copy-compression <none|zlib>',
      "compress the copies to and from the coordinator's store, both ways, with SSH's zlib: for slow links (default none)",
    )
    .option(
      '--fetch-watchdog-seconds <n>',
      'with free slots and jobs waiting, no fetch for this long restarts the fetch loop on a new Redis connection (default 30, 0: off)',
      integer('--fetch-watchdog-seconds'),
    )
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
    .addHelpText(
      'after',
      '\nExamples:\n  nixfarm worker --redis redis://coord:6379 --coordinator coord:2222 --host-key-file coord.pub --max-jobs 4 --features kvm,big-parallel\n  nixfarm worker --join ~/.local/state/nixfarm/coordinator --name local-1\n  nixfarm worker --join ~/.local/state/nixfarm/coordinator --drain-seconds 60 --min-free-disk 4096 --max-log-size 16M\n\nStopping: the first SIGTERM (or Ctrl-C) drains: no new builds, running ones finish within --drain-seconds\nor go back to the queue for another worker; a second one hands them back at once. Either way it exits 0.',
    )
    .action(async (flags: Record<string, unknown>) => {
      const fromFlags: Record<string, unknown> = {
        name: flags.name,
        ...redisSettingsFromFlags(flags),
        stateDir: flags.stateDir,
        systems: flags.system,
        supportedFeatures: flags.features,
        mandatoryFeatures: flags.mandatoryFeatures,
        maxJobs: flags.maxJobs,
        speedFactor: flags.speedFactor,
        nixOptions: flags.nixOption,
        lockSeconds: flags.lockSeconds,
        drainSeconds: flags.drainSeconds,
        minFreeDiskMiB: flags.minFreeDisk,
        // as typed (4096, 4K, 64M): the config schema parses it, so a bad value is named like any other field
        maxLogSize: flags.maxLogSize,
        copyCompression: flags.copyCompression,
        fetchWatchdogSeconds: flags.fetchWatchdogSeconds,
        logLevel: flags.logLevel,
      };
      if (typeof flags.join === 'string') {
        const c = await readCoordinatorFile(flags.join);
        if (fromFlags.redisUrl === undefined) {
          fromFlags.redisUrl = c.redisUrl;
          // the CA goes with the URL; a client certificate is this worker's own (--redis-cert/--redis-key)
          fromFlags.redisCaFile ??= c.redisCaFile;
        }
        fromFlags.coordinatorHost = '127.0.0.1';
        fromFlags.coordinatorPort = c.sshPort;
        fromFlags.coordinatorHostKey = c.hostKey;
      }
      if (typeof flags.coordinator === 'string') {
        const { host, port } = splitHostPort(flags.coordinator);
        fromFlags.coordinatorHost = host;
        if (port !== undefined) fromFlags.coordinatorPort = port;
      }
      if (typeof flags.hostKey === 'string') fromFlags.coordinatorHostKey = flags.hostKey;
      if (typeof flags.hostKeyFile === 'string') {
        try {
          fromFlags.coordinatorHostKey = (await readFile(flags.hostKeyFile, 'utf8')).trim();
        } catch (error) {
          throw new CliError(`cannot read --host-key-file ${flags.hostKeyFile}: ${(error as Error).message}`);
        }
      }
      const defaults = {
        name: os
          .hostname()
          .replace(/[^A-Za-z0-9_.-]/g, '-')
          .slice(0, 63),
        stateDir: DEFAULT_WORKER_STATE,
        systems: [await hostSystem()],
      };
      const config = await loadConfig(workerConfigSchema, flags.config as string | undefined, fromFlags, 'worker config', defaults);
      const logger = createLogger({ name: 'worker', level: config.logLevel });
      const { FarmWorker } = await import('@nixfarm/worker');
      const redisWait = cliRedisWait(`nixfarm worker ${config.name}`);
      // Its Redis user lost a permission while running: the worker stops and the command ends with that one message.
      let onFatal!: (error: NixfarmError) => void;
      const fatal = new Promise<NixfarmError>((resolve) => (onFatal = resolve));
      const worker = new FarmWorker({
        config,
        logger,
        redisWait: redisWait.hooks,
        onFatal,
      });
      await redisWait.during(worker.start());
      process.stderr.write(
        `nixfarm worker ${config.name} ready: ${config.systems.join(', ')}, max-jobs ${config.maxJobs}, speed factor ${config.speedFactor}\n`,
      );
      const signals = listenForShutdownSignals();
      try {
        const signal = await Promise.race([signals.first, fatal]);
        if (typeof signal !== 'string') {
          await worker.stop();
          throw signal;
        }
        const say = (line: string) => process.stderr.write(`nixfarm worker ${config.name}: ${line}\n`);
        const result = await worker.drain({
          handBackNow: signals.second.then((again) => say(`${again} again: handing running builds back now`)),
          onDraining: ({ running, deadline }) =>
            say(
              running === 0
                ? `${signal}: draining: taking no new builds; none running`
                : `${signal}: draining: taking no new builds; waiting for ${running} running build(s) until ${new Date(deadline).toISOString()} (--drain-seconds ${config.drainSeconds}), then handing them back; ${signal} again hands them back now`,
            ),
        });
        if (result.handedBack > 0)
          say(
            `handed ${result.handedBack} build(s) back to the queue (${result.handBackCause === 'told' ? 'told to leave now' : 'drain timeout ran out'}); stopped`,
          );
        else say(result.waitedFor === 0 ? 'stopped' : `the ${result.waitedFor} running build(s) ended; stopped`);
      } finally {
        signals.dispose();
      }
    });
}
