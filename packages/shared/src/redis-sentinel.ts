import { Redis, type RedisOptions } from 'ioredis';
import { NixfarmError } from './errors.js';

/**
 * Redis behind Sentinel: `redis+sentinel://[user:pass@]host1:port1,host2:port2/MASTER[?db=N&sentinelPassword=P]`,
 * or `rediss+sentinel://` for TLS to the sentinels and to the primary and replicas alike.
 * One string, like a plain Redis URL, so it travels wherever a URL does
 * (config files, coordinator.json for `--join`); the user and password are
 * the primary's (its replicas share them), the sentinels' own go in the query.
 */
const SENTINEL_URL_SCHEME = 'redis+sentinel://';
const SENTINEL_TLS_URL_SCHEME = 'rediss+sentinel://';

const SENTINEL_URL_FORM = 'redis+sentinel://[user:pass@]host1:port1,host2:port2/MASTER (rediss+sentinel:// for TLS; optionally ?db=N&sentinelPassword=P)';
const SENTINEL_PORT_DEFAULT = 26379;

export interface SentinelAddress {
  host: string;
  port: number;
}

export interface SentinelTarget {
  sentinels: SentinelAddress[];
  /** the master name the sentinels monitor (`sentinel monitor NAME ...`) */
  master: string;
  /** rediss+sentinel://: TLS to the sentinels and to the data nodes, with the same CA and client certificate */
  tls: boolean;
  db?: number;
  username?: string;
  password?: string;
  sentinelUsername?: string;
  sentinelPassword?: string;
}

/** A `redis+sentinel://` URL that cannot be used; the message names the part and the form. */
class SentinelUrlError extends NixfarmError {
  constructor(url: string, problem: string) {
    super('invalid-input', `${redactSentinelUrl(url)}: ${problem}; a Sentinel URL looks like ${SENTINEL_URL_FORM}`, { retryable: false });
  }
}

/** Every sentinel answered, and none knows the master name: a typo or a sentinel config that does not monitor it; waiting cannot fix that. */
export class SentinelMasterUnknownError extends NixfarmError {
  constructor(target: SentinelTarget, setting: string) {
    super(
      'redis-sentinel-master-unknown',
      `the sentinels ${describeSentinels(target)} do not know a master named '${target.master}'; check the name (${setting}) against \`sentinel monitor NAME\` in their config (redis-cli -p PORT SENTINEL masters lists them)`,
      { retryable: false },
    );
  }
}

export function isSentinelUrl(url: string): boolean {
  return url.startsWith(SENTINEL_URL_SCHEME) || url.startsWith(SENTINEL_TLS_URL_SCHEME);
}

/** Parses a `redis+sentinel://` URL, naming the part that is wrong. */
export function parseSentinelUrl(url: string): SentinelTarget {
  if (!isSentinelUrl(url)) throw new SentinelUrlError(url, `it does not start with ${SENTINEL_URL_SCHEME} or ${SENTINEL_TLS_URL_SCHEME}`);
  const tls = url.startsWith(SENTINEL_TLS_URL_SCHEME);
  const rest = url.slice((tls ? SENTINEL_TLS_URL_SCHEME : SENTINEL_URL_SCHEME).length);
  const m = /^(?:([^@/]*)@)?([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/.exec(rest);
  if (m === null) throw new SentinelUrlError(url, 'it does not parse');
  const [, userinfo, hosts = '', path = '', query = ''] = m;
  const target: SentinelTarget = {
    sentinels: hosts.split(',').map((h) => parseSentinelAddress(h, (problem) => new SentinelUrlError(url, problem))),
    master: '',
    tls,
  };
  const master = decodeURIComponent(path);
  if (master === '') throw new SentinelUrlError(url, 'the master name is missing after the hosts (/MASTER)');
  if (!/^[A-Za-z0-9_.-]+$/.test(master)) throw new SentinelUrlError(url, `the master name ${JSON.stringify(master)} may hold only letters, digits, _ . -`);
  target.master = master;
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(':');
    const user = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon));
    if (user !== '') target.username = user;
    if (colon >= 0) target.password = decodeURIComponent(userinfo.slice(colon + 1));
  }
  for (const [key, value] of new URLSearchParams(query)) {
    if (key === 'db') {
      if (!/^\d{1,2}$/.test(value)) throw new SentinelUrlError(url, `db must be a database number (like ?db=0), got ${JSON.stringify(value)}`);
      target.db = Number(value);
    } else if (key === 'sentinelPassword') target.sentinelPassword = value;
    else if (key === 'sentinelUsername') target.sentinelUsername = value;
    else throw new SentinelUrlError(url, `unknown query parameter ${JSON.stringify(key)} (known: db, sentinelUsername, sentinelPassword)`);
  }
  return target;
}

/** `host:port` of one sentinel (`[v6]:port` too); the port defaults to Sentinel's 26379. */
function parseSentinelAddress(value: string, error: (problem: string) => Error = (p) => new NixfarmError('invalid-input', p)): SentinelAddress {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9_.-]+))(?::(\d{1,5}))?$/.exec(value);
  if (m === null) {
    throw error(
      value === '' ? 'a sentinel address is empty (hosts are host:port joined by commas)' : `the sentinel address ${JSON.stringify(value)} is not host:port`,
    );
  }
  const port = m[3] === undefined ? SENTINEL_PORT_DEFAULT : Number(m[3]);
  if (port < 1 || port > 65535) throw error(`the sentinel port in ${JSON.stringify(value)} must be from 1 to 65535`);
  return { host: m[1] ?? m[2]!, port };
}

/** The URL for `--sentinel host:port` (repeatable) and `--sentinel-master NAME` (and `--sentinel-tls`). */
export function sentinelUrlOf(sentinels: readonly string[], master: string, tls = false): string {
  const url = `${tls ? SENTINEL_TLS_URL_SCHEME : SENTINEL_URL_SCHEME}${sentinels.join(',')}/${encodeURIComponent(master)}`;
  parseSentinelUrl(url);
  return url;
}

/** The URL without its passwords, for messages and logs. */
export function redactSentinelUrl(url: string): string {
  return url.replace(/^(rediss?\+sentinel:\/\/[^:@/]*:)[^@/]*@/, '$1***@').replace(/([?&]sentinelPassword=)[^&#]*/, '$1***');
}

/** Why a connection through the sentinels failed, as nixfarm says it: ioredis's "All sentinels are unreachable" names neither sentinels nor master. */
export function describeSentinelFailure(target: SentinelTarget, error: Error, sentinelErrors: readonly Error[]): string {
  if (!error.message.startsWith('All sentinels are unreachable')) return (error as NodeJS.ErrnoException).code ?? error.message;
  // A sentinel that refuses the connection shows as ioredis's "Connection is closed." (its sentinel clients do not retry).
  const reasons = [
    ...new Set(
      sentinelErrors.map((e) =>
        (/because (.*)$/.exec(e.message)?.[1] ?? e.message).replace(/^Connection is closed\.$/, 'no answer (connection refused or closed)'),
      ),
    ),
  ];
  return `none of the sentinels ${describeSentinels(target)} told where master '${target.master}' is${reasons.length > 0 ? `: ${reasons.join('; ')}` : ''}`;
}

/** Every sentinel answered and none knows the master: Redis 7 says "No such master with that name", older ones a null address. */
export function masterUnknownToAll(target: SentinelTarget, sentinelErrors: readonly Error[]): boolean {
  const unknownMaster = /No such master with that name|successfully, but got an invalid reply: null/;
  const unknown = new Set(sentinelErrors.filter((e) => unknownMaster.test(e.message)).map((e) => /sentinel (\S+)/.exec(e.message)?.[1]));
  return target.sentinels.every((s) => unknown.has(`${s.host}:${s.port}`));
}

function describeSentinels(target: SentinelTarget): string {
  return target.sentinels.map((s) => `${s.host}:${s.port}`).join(', ');
}

/**
 * A client for the primary the sentinels name. It follows failovers: a lost
 * connection asks the sentinels again, and a READONLY reply (the connection
 * still on a demoted primary) reconnects and resends the command, the known
 * fix for BullMQ after a failover. duplicate() keeps all of this. ioredis's
 * failover detector (+switch-master) stays off: a switch announced while a
 * reconnect is asking the sentinels ends that client for good (its connect
 * fails with "Connection is closed." and it never retries; seen in the
 * sentinel-failover scenario). With TLS, extra.tls (the CA and client
 * certificate) serves the sentinels and the data nodes alike.
 */
export function newSentinelClient(target: SentinelTarget, extra: RedisOptions): Redis {
  // ioredis takes TLS for a Sentinel set in two options: `tls` for the primary/replicas (only with enableTLSForSentinelMode), `sentinelTLS` for the sentinels.
  const tls = target.tls ? { enableTLSForSentinelMode: true, sentinelTLS: extra.tls ?? {}, tls: extra.tls ?? {} } : {};
  return new Redis({
    sentinels: target.sentinels,
    name: target.master,
    ...(target.db === undefined ? {} : { db: target.db }),
    ...(target.username === undefined ? {} : { username: target.username }),
    ...(target.password === undefined ? {} : { password: target.password }),
    ...(target.sentinelUsername === undefined ? {} : { sentinelUsername: target.sentinelUsername }),
    ...(target.sentinelPassword === undefined ? {} : { sentinelPassword: target.sentinelPassword }),
    reconnectOnError: (error) => (error.message.startsWith('READONLY') ? 2 : false),
    ...extra,
    ...tls,
  });
}
