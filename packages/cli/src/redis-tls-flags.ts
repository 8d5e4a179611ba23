import { Option } from 'commander';
import type { RedisTlsFiles } from '@nixfarm/shared';

const DESCRIPTIONS = {
  ca: "PEM CA certificate(s) for a rediss:// Redis: the server's certificate must be signed by one (default: the system's CAs)",
  cert: 'PEM client certificate for a rediss:// Redis that asks for one (tls-auth-clients); with --redis-key',
  key: 'PEM private key of --redis-cert, without a passphrase',
} as const;

/** One of the flags for TLS to Redis, worded alike on every command that connects to Redis itself. */
export function redisTlsOption(which: keyof typeof DESCRIPTIONS): Option {
  return new Option(`--redis-${which} <file>`, DESCRIPTIONS[which]);
}

/** The config fields the flags set (undefined: not given, the config file's value stays). */
export function redisTlsFromFlags(flags: Record<string, unknown>): RedisTlsFiles {
  return {
    redisCaFile: flags.redisCa as string | undefined,
    redisCertFile: flags.redisCert as string | undefined,
    redisKeyFile: flags.redisKey as string | undefined,
  };
}
