import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { ConnectionOptions } from 'node:tls';
import { NixfarmError } from './errors.js';

/** Where the TLS material for a rediss:// (or rediss+sentinel://) connection is: the config fields, by the names the config schemas give them. */
export interface RedisTlsFiles {
  /** PEM CA certificate(s) the server's certificate must be signed by; absent: the system's CAs */
  redisCaFile?: string | undefined;
  /** PEM client certificate, for a server with tls-auth-clients; only with redisKeyFile */
  redisCertFile?: string | undefined;
  /** PEM private key of redisCertFile */
  redisKeyFile?: string | undefined;
}

/** The flag of each setting, named in messages (the config loader maps the fields to the same flags). */
export const REDIS_TLS_FLAGS = { redisCaFile: '--redis-ca', redisCertFile: '--redis-cert', redisKeyFile: '--redis-key' } as const;

/** The files read and checked once, as ioredis's `tls` option takes them, and where they came from (for messages). */
export interface RedisTls {
  options: ConnectionOptions;
  files: RedisTlsFiles;
}

/** A TLS setting that can never work as given (a file that is missing or not PEM, a certificate without its key): said once, never retried. */
export class RedisTlsSettingError extends NixfarmError {
  constructor(message: string) {
    super('invalid-redis-tls-setting', message, { retryable: false });
  }
}

export function hasRedisTlsFiles(files: RedisTlsFiles): boolean {
  return givenFlags(files).length > 0;
}

function isTlsUrl(url: string): boolean {
  return /^rediss(\+sentinel)?:\/\//i.test(url);
}

/**
 * The ioredis `tls` options for a URL: undefined for redis:// (plain), the
 * CA and client certificate read and checked for rediss:// and rediss+sentinel://. Verification
 * stays Node's default (the chain against the CA, the name against the URL's
 * host); there is deliberately no setting to turn it off.
 */
export async function loadRedisTls(url: string, shownUrl: string, files: RedisTlsFiles): Promise<RedisTls | undefined> {
  const { redisCaFile, redisCertFile, redisKeyFile } = files;
  if (!isTlsUrl(url)) {
    const given = givenFlags(files);
    if (given.length === 0) return undefined;
    const named = given.length === 1 ? `${given[0]!} is` : `${given.slice(0, -1).join(', ')} and ${given.at(-1)!} are`;
    throw new RedisTlsSettingError(
      /^redis\+sentinel:/i.test(url)
        ? `${named} for a connection over TLS, but the Redis URL ${shownUrl} is plain redis+sentinel://: use rediss+sentinel://host:port,host:port/MASTER (or --sentinel-tls) for TLS to the sentinels and the primary`
        : `${named} for a connection over TLS, but the Redis URL ${shownUrl} is plain redis://: use rediss://host:port to connect over TLS`,
    );
  }
  if ((redisCertFile === undefined) !== (redisKeyFile === undefined)) {
    throw new RedisTlsSettingError(
      `--redis-cert and --redis-key go together (a client certificate and its private key); only ${redisCertFile === undefined ? `--redis-key ${redisKeyFile}` : `--redis-cert ${redisCertFile}`} was given`,
    );
  }
  const options: ConnectionOptions = {};
  if (redisCaFile !== undefined) {
    const text = await readSetting(redisCaFile, REDIS_TLS_FLAGS.redisCaFile);
    parseCertificate(text, redisCaFile, REDIS_TLS_FLAGS.redisCaFile);
    options.ca = text;
  }
  if (redisCertFile !== undefined && redisKeyFile !== undefined) {
    const certText = await readSetting(redisCertFile, REDIS_TLS_FLAGS.redisCertFile);
    const cert = parseCertificate(certText, redisCertFile, REDIS_TLS_FLAGS.redisCertFile);
    const keyText = await readSetting(redisKeyFile, REDIS_TLS_FLAGS.redisKeyFile);
    const key = parsePrivateKey(keyText, redisKeyFile);
    if (!cert.checkPrivateKey(key))
      throw new RedisTlsSettingError(
        `--redis-key ${redisKeyFile} is not the private key of --redis-cert ${redisCertFile}: give the key the certificate was made for`,
      );
    options.cert = certText;
    options.key = keyText;
  }
  return { options, files };
}

/** The flags of the settings that are set, in flag order. */
function givenFlags(files: RedisTlsFiles): string[] {
  return (Object.keys(REDIS_TLS_FLAGS) as Array<keyof RedisTlsFiles>).filter((field) => files[field] !== undefined).map((field) => REDIS_TLS_FLAGS[field]);
}

async function readSetting(file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new RedisTlsSettingError(`cannot read ${flag} ${file}: ${(error as Error).message}`);
  }
}

function parseCertificate(text: string, file: string, flag: string): X509Certificate {
  const notPem = `${flag} ${file} is not a PEM certificate (a file that starts with -----BEGIN CERTIFICATE-----)`;
  if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new RedisTlsSettingError(notPem);
  try {
    return new X509Certificate(text);
  } catch (error) {
    throw new RedisTlsSettingError(`${notPem}: ${(error as Error).message}`);
  }
}

function parsePrivateKey(text: string, file: string): KeyObject {
  const notPem = `--redis-key ${file} is not a PEM private key (a file that starts with -----BEGIN PRIVATE KEY----- or -----BEGIN EC/RSA PRIVATE KEY-----, without a passphrase)`;
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) throw new RedisTlsSettingError(notPem);
  try {
    return createPrivateKey(text);
  } catch (error) {
    throw new RedisTlsSettingError(`${notPem}: ${(error as Error).message}`);
  }
}
