import { type Command, Option } from 'commander';
import { sentinelUrlOf, type RedisTlsFiles } from '@nixfarm/shared';
import { collect } from './config-loader.js';
import { CliError } from './exit-codes.js';

/**
 * Where Redis is and how to reach it, as flags: one owner for every command
 * that connects to Redis itself (the coordinator and the worker), so they are
 * worded and read alike.
 */

const DESCRIPTIONS = {
  ca: "PEM CA certificate(s) for a rediss:// Redis: the server's certificate must be signed by one (default: the system's CAs)",
  cert: 'PEM client certificate for a rediss:// Redis that asks for one (tls-auth-clients); with --redis-key',
  key: 'PEM private key of --redis-cert, without a passphrase',
} as const;

/** --redis, the TLS files, and the Sentinel form, in the order the help and docs/cli.md list them. */
export function withRedisOptions(command: Command, redisHelp: string): Command {
  return command
    .option('--redis <url>', redisHelp)
    .addOption(new Option('--redis-ca <file>', DESCRIPTIONS.ca))
    .addOption(new Option('--redis-cert <file>', DESCRIPTIONS.cert))
    .addOption(new Option('--redis-key <file>', DESCRIPTIONS.key))
    .option('--sentinel <host:port>', 'a Redis Sentinel to ask for the primary, repeatable (instead of --redis; with --sentinel-master)', collect)
    .option('--sentinel-master <name>', 'the master name the sentinels monitor')
    .option(
      '--sentinel-tls',
      'TLS to the sentinels and to the primary and replicas (with --sentinel; the CA and client certificate of --redis-ca/--redis-cert)',
    );
}

/** The config fields the flags set (undefined: not given, the config file's value stays). */
export function redisSettingsFromFlags(flags: Record<string, unknown>): { redisUrl: string | undefined } & RedisTlsFiles {
  return {
    redisUrl: redisUrlFromFlags(flags),
    redisCaFile: flags.redisCa as string | undefined,
    redisCertFile: flags.redisCert as string | undefined,
    redisKeyFile: flags.redisKey as string | undefined,
  };
}

/**
 * The Redis URL the flags name: `--redis URL`, or `--sentinel host:port`
 * (repeatable) with `--sentinel-master NAME`, which become one
 * redis+sentinel:// URL (what a config file's redisUrl holds too);
 * `--sentinel-tls` makes it rediss+sentinel://, TLS to the sentinels and the primary.
 */
function redisUrlFromFlags(flags: Record<string, unknown>): string | undefined {
  const sentinels = (flags.sentinel as string[] | undefined) ?? [];
  const master = flags.sentinelMaster as string | undefined;
  const tls = flags.sentinelTls === true;
  if (sentinels.length === 0) {
    if (master !== undefined) throw new CliError('--sentinel-master needs the sentinels to ask: add --sentinel host:port (repeatable)');
    if (tls) throw new CliError('--sentinel-tls is for --sentinel host:port with --sentinel-master NAME; with --redis, write rediss+sentinel:// instead');
    return flags.redis as string | undefined;
  }
  if (flags.redis !== undefined)
    throw new CliError('--redis and --sentinel both say where Redis is: give one (--sentinel with --sentinel-master for Sentinel)');
  if (master === undefined) throw new CliError("--sentinel needs --sentinel-master NAME: the name in the sentinels' `sentinel monitor NAME host port quorum`");
  try {
    return sentinelUrlOf(sentinels, master, tls);
  } catch (error) {
    throw new CliError(`--sentinel/--sentinel-master: ${(error as Error).message}`);
  }
}
