import { createConnection } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { NixfarmError } from './errors.js';
import { REDIS_TLS_FLAGS, type RedisTls } from './redis-tls.js';

/** Why a connection to Redis failed at the TLS layer: each is a setting to fix, so none is retried. */
export type RedisTlsFailureCause =
  | 'plain-to-tls-port'
  | 'tls-to-plain-port'
  | 'unknown-ca'
  | 'certificate-expired'
  | 'certificate-not-yet-valid'
  | 'host-name-mismatch'
  | 'client-certificate-required'
  | 'client-certificate-rejected';

/** TLS between us and Redis cannot work as set up: one message naming the cause and what to change. */
export class RedisTlsError extends NixfarmError {
  constructor(
    readonly tlsCause: RedisTlsFailureCause,
    message: string,
  ) {
    super('redis-tls-failed', message, { retryable: false, details: { cause: tlsCause } });
  }
}

/** Node's codes for a server certificate whose chain does not lead to a CA we trust. */
const UNKNOWN_CA_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'INVALID_CA',
]);
/** OpenSSL's alerts from a server that wants a client certificate and got none. */
const CERT_REQUIRED_CODES = new Set(['ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE']);
/** OpenSSL's alerts from a server that did not accept the client certificate it got. */
const CERT_REJECTED_CODES = new Set([
  'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
  'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN',
  'ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR',
  ...CERT_REQUIRED_CODES,
]);
/** What a TLS client sees from a server that answers in plain Redis (or not at all: it waits for a line that never comes). */
const PLAIN_ANSWER_CODES = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG', 'EPROTO', 'ECONNRESET', 'ETIMEDOUT']);
/** How long a probe that tells what the server speaks may take. */
const PROBE_MS = 3000;

export interface RedisTlsFailureContext {
  /** the URL as given (host and port are read from it) */
  url: string;
  /** the URL as shown (no password) */
  shownUrl: string;
  /** the settings in use; undefined for a plain redis:// URL */
  tls: RedisTls | undefined;
  /** the flag or setting that gave the URL */
  setting: string;
}

/**
 * Names the cause of a failed connection when it is one of TLS's (see
 * RedisTlsFailureCause); undefined when it is not, and the caller's wait and
 * retry goes on (a server that is not up yet is not a TLS problem). A reset
 * of a plain connection, or a TLS handshake that got no TLS answer, is checked
 * with one probe of the other kind before it is called a wrong scheme.
 */
export async function diagnoseRedisTlsFailure(error: Error, context: RedisTlsFailureContext): Promise<RedisTlsError | undefined> {
  const code = (error as NodeJS.ErrnoException).code;
  const { shownUrl, tls } = context;
  const target = hostAndPort(context.url);
  if (tls === undefined) {
    const closed = code === 'ECONNRESET' || (code === undefined && /connection is closed/i.test(error.message));
    if (closed && (await speaksTls(target)))
      return new RedisTlsError(
        'plain-to-tls-port',
        `the server at ${shownUrl} speaks TLS and closed the plain connection: use rediss://${target.host}:${target.port} (${context.setting}), with ${REDIS_TLS_FLAGS.redisCaFile} FILE for its CA`,
      );
    return undefined;
  }
  if (code === undefined) return undefined;
  const ca = tls.files.redisCaFile;
  if (UNKNOWN_CA_CODES.has(code))
    return new RedisTlsError(
      'unknown-ca',
      `the certificate of the Redis server at ${shownUrl} is not signed by a CA in ${ca === undefined ? `the system's CAs (no ${REDIS_TLS_FLAGS.redisCaFile} was given)` : `${REDIS_TLS_FLAGS.redisCaFile} ${ca}`} (${code}): give the CA that signed it with ${REDIS_TLS_FLAGS.redisCaFile} FILE`,
    );
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
    const validity = await serverCertificateValidity(target, tls.options);
    if (code === 'CERT_HAS_EXPIRED')
      return new RedisTlsError(
        'certificate-expired',
        `the certificate of the Redis server at ${shownUrl} has expired${validity === undefined ? '' : ` (on ${validity.to})`} (${code}): renew it (redis.conf's tls-cert-file) and restart or reconfigure the server`,
      );
    return new RedisTlsError(
      'certificate-not-yet-valid',
      `the certificate of the Redis server at ${shownUrl} is not valid yet${validity === undefined ? '' : ` (from ${validity.from})`} (${code}): check the clocks of this machine and of the one that issued it`,
    );
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = (error as Error & { cert?: { subjectaltname?: string } }).cert?.subjectaltname;
    return new RedisTlsError(
      'host-name-mismatch',
      `the certificate of the Redis server at ${shownUrl} is not for ${target.host}${names === undefined ? '' : ` (it names ${names})`} (${code}): connect with a host name the certificate names, or issue it with ${target.host} in its subjectAltName`,
    );
  }
  const cert = tls.files.redisCertFile;
  const clientCertificateRefused = (reason: string): RedisTlsError =>
    cert === undefined
      ? new RedisTlsError(
          'client-certificate-required',
          `the Redis server at ${shownUrl} requires a client certificate and none was given (${reason}): give ${REDIS_TLS_FLAGS.redisCertFile} FILE and ${REDIS_TLS_FLAGS.redisKeyFile} FILE, a certificate signed by a CA in the server's tls-ca-cert-file`,
        )
      : new RedisTlsError(
          'client-certificate-rejected',
          `the Redis server at ${shownUrl} did not accept the client certificate ${REDIS_TLS_FLAGS.redisCertFile} ${cert} (${reason}): it must be valid and signed by a CA in the server's tls-ca-cert-file`,
        );
  if ((cert === undefined ? CERT_REQUIRED_CODES : CERT_REJECTED_CODES).has(code)) return clientCertificateRefused(code);
  if (!PLAIN_ANSWER_CODES.has(code)) return undefined;
  if (await speaksPlainRedis(target))
    return new RedisTlsError(
      'tls-to-plain-port',
      `the server at ${shownUrl} does not speak TLS: it answers plain Redis; use redis://${target.host}:${target.port} (${context.setting}), or enable TLS on the server (redis.conf's tls-port)`,
    );
  // A server that refuses our client certificate may reset the connection before its alert is read: ask once more, and watch.
  const session = await probeTlsSession(target, tls.options);
  return session.outcome === 'closed-after-handshake' ? clientCertificateRefused('it closed the connection after the handshake') : undefined;
}

interface HostPort {
  host: string;
  port: number;
}

function hostAndPort(url: string): HostPort {
  const parsed = new URL(url);
  return { host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'), port: parsed.port === '' ? 6379 : Number(parsed.port) };
}

/** Whether the server answers a TLS handshake: any answer that carries a certificate, verified or not, says it does. */
function speaksTls(target: HostPort): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ ...target, servername: serverName(target.host) });
    const done = (answer: boolean): void => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(PROBE_MS, () => done(false));
    socket.once('secureConnect', () => done(true));
    socket.once('error', (error: NodeJS.ErrnoException) => {
      const code = error.code ?? '';
      done(UNKNOWN_CA_CODES.has(code) || CERT_REJECTED_CODES.has(code) || /^CERT_|^ERR_TLS_CERT/.test(code));
    });
  });
}

/** What one probing TLS session saw (probeTlsSession). */
export interface TlsSessionProbe {
  outcome: 'answered' | 'closed-after-handshake' | 'no-handshake';
  /** the error the session ended with, if it ended with one */
  error?: Error;
}

/**
 * One TLS session with our settings that sends PING: 'answered' (a reply came:
 * whatever failed before was passing), 'closed-after-handshake' (the handshake
 * passed our checks, then the server hung up unasked: it refused our client
 * certificate, or the lack of one), or 'no-handshake'; with the error it ended
 * with, for a caller that diagnoses it (a sentinel, whose client says only
 * "Connection is closed.").
 */
export function probeTlsSession(target: HostPort, options: ConnectionOptions): Promise<TlsSessionProbe> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ ...options, ...target, servername: serverName(target.host) });
    let handshook = false;
    const done = (outcome: TlsSessionProbe['outcome'], error?: Error): void => {
      socket.destroy();
      resolve(error === undefined ? { outcome } : { outcome, error });
    };
    socket.setTimeout(PROBE_MS, () => done(handshook ? 'answered' : 'no-handshake'));
    socket.once('secureConnect', () => {
      handshook = true;
      socket.write('PING\r\n');
    });
    socket.once('data', () => done('answered'));
    socket.once('error', (error: NodeJS.ErrnoException) =>
      done(handshook || CERT_REJECTED_CODES.has(error.code ?? '') ? 'closed-after-handshake' : 'no-handshake', error),
    );
    socket.once('close', () => done(handshook ? 'closed-after-handshake' : 'no-handshake'));
  });
}

/** Whether the server answers a plain PING with a Redis reply (+PONG, or an error such as -NOAUTH). */
function speaksPlainRedis(target: HostPort): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(target);
    const done = (answer: boolean): void => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(PROBE_MS, () => done(false));
    // a TLS server takes the PING for a broken handshake and hangs up
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (chunk) => done(/^[+-]/.test(chunk.toString('latin1'))));
  });
}

/**
 * The server certificate's dates, for the message only. Node destroys a
 * connection whose certificate fails verification before the certificate can
 * be read, so this one handshake does not reject it; it is closed as soon as
 * the certificate is read, and nothing is ever sent on it.
 */
function serverCertificateValidity(target: HostPort, options: ConnectionOptions): Promise<{ from: string; to: string } | undefined> {
  return new Promise((resolve) => {
    const socket: TLSSocket = tlsConnect({ ...options, ...target, servername: serverName(target.host), rejectUnauthorized: false });
    const done = (validity: { from: string; to: string } | undefined): void => {
      socket.destroy();
      resolve(validity);
    };
    socket.setTimeout(PROBE_MS, () => done(undefined));
    socket.once('error', () => done(undefined));
    socket.once('secureConnect', () => {
      const cert = socket.getPeerCertificate();
      done(cert.valid_to === undefined ? undefined : { from: cert.valid_from, to: cert.valid_to });
    });
  });
}

/** SNI takes a host name, never an IP address (Node warns on one). */
function serverName(host: string): string | undefined {
  return /^[\d.]+$|:/.test(host) ? undefined : host;
}
