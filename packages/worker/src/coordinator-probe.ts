import { readFile } from 'node:fs/promises';
import ssh2 from 'ssh2';
import type { ClientChannel } from 'ssh2';
import { NixfarmError, formatSshPublicKey, parseSshPublicKey, sshKeyFingerprint, type Logger } from '@nixfarm/shared';

export interface ProbeCoordinatorOptions {
  host: string;
  port: number;
  /** the coordinator's pinned public host key line */
  hostKeyLine: string;
  privateKeyPath: string;
  logger: Logger;
  /** for the whole probe: connect, authenticate, greet Nix (default 10 s) */
  timeoutMs?: number;
  /** named in the "how to authorise" message when known; a placeholder otherwise */
  coordinatorStateDir?: string;
}

export interface ProbeResult {
  hostKeyFingerprint: string;
  workerKeyFingerprint: string;
  /** what the coordinator's `nix-store --serve` answered, e.g. 0x206 */
  serveProtocolVersion: number;
  ms: number;
}

/** The coordinator presented another host key than the pinned one: a moved or impersonated coordinator. Never retried. */
export class HostKeyMismatchError extends NixfarmError {
  readonly expectedFingerprint: string;
  readonly actualFingerprint: string;
  constructor(address: string, expectedFingerprint: string, actualFingerprint: string) {
    super(
      'host-key-mismatch',
      `the SSH server at ${address} presented host key ${actualFingerprint}, but this worker pins ${expectedFingerprint}; ` +
        'if the coordinator really changed its key, give the worker the new one (nixfarm prints it at start), else something is impersonating it',
      { retryable: false, details: { expectedFingerprint, actualFingerprint } },
    );
    this.expectedFingerprint = expectedFingerprint;
    this.actualFingerprint = actualFingerprint;
  }
}

/** The coordinator does not know this worker's key. Retrying cannot help until someone authorises it. */
export class WorkerKeyNotAuthorisedError extends NixfarmError {
  readonly fingerprint: string;
  readonly publicKeyLine: string;
  readonly authorizeCommand: string;
  constructor(address: string, fingerprint: string, publicKeyLine: string, coordinatorStateDir: string | undefined) {
    const authorizeCommand = `nixfarm authorize --state-dir ${coordinatorStateDir ?? '<coordinator state dir>'} ${singleQuote(publicKeyLine)}`;
    super(
      'worker-key-not-authorised',
      `the coordinator at ${address} refused this worker's SSH key ${fingerprint}; to authorise it, on the coordinator machine run: ${authorizeCommand}`,
      { retryable: false, details: { fingerprint, publicKeyLine } },
    );
    this.fingerprint = fingerprint;
    this.publicKeyLine = publicKeyLine;
    this.authorizeCommand = authorizeCommand;
  }
}

/** Network trouble, a coordinator that is down or slow: worth trying again. */
export class CoordinatorUnreachableError extends NixfarmError {
  constructor(address: string, reason: string, cause?: unknown) {
    super('coordinator-unreachable', `cannot reach the coordinator's SSH endpoint at ${address}: ${reason}`, { retryable: true, cause });
  }
}

/** Logged in, but the coordinator's Nix did not answer as `nix-store --serve` should. */
class CoordinatorStoreError extends NixfarmError {
  constructor(address: string, reason: string, cause?: unknown) {
    super('coordinator-store-unavailable', `the coordinator at ${address} accepted this worker but its store did not answer: ${reason}`, {
      retryable: true,
      cause,
    });
  }
}

/** nix-store --serve's greeting (Nix's serve-protocol.hh): both sides send a magic number and a version, as 64-bit little-endian words. */
const SERVE_MAGIC_1 = 0x390c9debn;
const SERVE_MAGIC_2 = 0x5452eecbn;
const SERVE_PROTOCOL_VERSION = 0x206n;

/**
 * Checks, before taking any job, what every copy will need: the
 * coordinator is reachable, is the pinned one, accepts this worker's key,
 * and its `nix-store --serve` answers. Each failure says what to do.
 */
export async function probeCoordinator(options: ProbeCoordinatorOptions): Promise<ProbeResult> {
  const started = Date.now();
  const address = `${options.host}:${options.port}`;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const pinned = parseSshPublicKey(options.hostKeyLine);
  const privateKey = await readFile(options.privateKeyPath, 'utf8');
  const workerKey = publicKeyOf(privateKey, options.privateKeyPath);
  const log = options.logger.child({ coordinator: address });

  const client = new ssh2.Client();
  let presentedHostKey: Buffer | undefined;
  let authenticated = false;

  const result = new Promise<number>((resolve, reject) => {
    const fail = (error: Error): void => {
      clearTimeout(timer);
      reject(error);
      client.end();
    };
    const timer = setTimeout(() => {
      fail(
        authenticated
          ? new CoordinatorStoreError(address, `no answer from nix-store --serve within ${timeoutMs} ms`)
          : new CoordinatorUnreachableError(address, `no SSH session within ${timeoutMs} ms`),
      );
    }, timeoutMs);

    client.on('error', (error: Error & { level?: string }) => {
      if (presentedHostKey !== undefined && !presentedHostKey.equals(pinned.blob)) {
        fail(new HostKeyMismatchError(address, pinned.fingerprint, sshKeyFingerprint(presentedHostKey)));
      } else if (error.level === 'client-authentication') {
        fail(new WorkerKeyNotAuthorisedError(address, workerKey.fingerprint, workerKey.line, options.coordinatorStateDir));
      } else {
        fail(new CoordinatorUnreachableError(address, error.message, error));
      }
    });
    client.on('ready', () => {
      authenticated = true;
      client.exec('nix-store --serve', (error, channel) => {
        if (error) return fail(new CoordinatorStoreError(address, `nix-store --serve was refused: ${error.message}`, error));
        greetServe(channel).then(
          (version) => {
            clearTimeout(timer);
            resolve(version);
            client.end();
          },
          (greetError: Error) => fail(new CoordinatorStoreError(address, greetError.message, greetError)),
        );
      });
    });
    client.connect({
      host: options.host,
      port: options.port,
      username: 'nixfarm',
      privateKey,
      // Called with the raw key blob (no hostHash): compare with the pinned key, nothing else.
      hostVerifier: (key: Buffer): boolean => {
        presentedHostKey = Buffer.from(key);
        return key.equals(pinned.blob);
      },
      readyTimeout: timeoutMs,
      tryKeyboard: false,
    });
  });

  const serveProtocolVersion = await result;
  const probe = { hostKeyFingerprint: pinned.fingerprint, workerKeyFingerprint: workerKey.fingerprint, serveProtocolVersion, ms: Date.now() - started };
  log.info(probe, 'coordinator store reachable');
  return probe;
}

/** Sends the client greeting, checks the server's, then hangs up (nix-store --serve exits on EOF). */
function greetServe(channel: ClientChannel): Promise<number> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    let stderr = '';
    let settled = false;
    const settle = (error: Error | undefined, version?: number): void => {
      if (settled) return;
      settled = true;
      channel.end();
      if (error !== undefined) reject(error);
      else resolve(version ?? 0);
    };
    channel.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 2000) stderr += chunk.toString('utf8');
    });
    channel.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 16) return;
      const magic = received.readBigUInt64LE(0);
      const version = received.readBigUInt64LE(8);
      if (magic !== SERVE_MAGIC_2) settle(new Error(`nix-store --serve answered with a wrong magic number 0x${magic.toString(16)}`));
      else if (version >> 8n !== 2n) settle(new Error(`unsupported nix-store --serve protocol version 0x${version.toString(16)}`));
      else settle(undefined, Number(version));
    });
    channel.on('close', (code: number | null) => {
      settle(new Error(`nix-store --serve ended before greeting (exit ${code ?? 'unknown'})${stderr.length > 0 ? `: ${stderr.trim()}` : ''}`));
    });
    const greeting = Buffer.alloc(16);
    greeting.writeBigUInt64LE(SERVE_MAGIC_1, 0);
    greeting.writeBigUInt64LE(SERVE_PROTOCOL_VERSION, 8);
    channel.write(greeting);
  });
}

function publicKeyOf(privateKey: string, path: string): { fingerprint: string; line: string } {
  const result = ssh2.utils.parseKey(privateKey);
  const parsed = Array.isArray(result) ? result[0] : result;
  if (parsed === undefined || parsed instanceof Error) {
    throw new NixfarmError('invalid-worker-key-file', `cannot use the worker key ${path}: not an OpenSSH private key`, { retryable: false });
  }
  const key = parseSshPublicKey(`${parsed.type} ${parsed.getPublicSSH().toString('base64')} ${parsed.comment}`);
  return { fingerprint: key.fingerprint, line: formatSshPublicKey(key) };
}

function singleQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}
