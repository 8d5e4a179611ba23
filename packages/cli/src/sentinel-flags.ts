import { sentinelUrlOf } from '@nixfarm/shared';
import { CliError } from './exit-codes.js';

/**
 * The Redis URL the flags name: `--redis URL`, or `--sentinel host:port`
 * (repeatable) with `--sentinel-master NAME`, which become one
 * redis+sentinel:// URL (what a config file's redisUrl holds too);
 * `--sentinel-tls` makes it rediss+sentinel://, TLS to the sentinels and the primary.
 */
export function redisUrlFromFlags(flags: Record<string, unknown>): string | undefined {
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
