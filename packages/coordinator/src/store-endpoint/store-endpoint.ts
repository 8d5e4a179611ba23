import { spawn, type ChildProcess } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import { resolve as resolvePath } from 'node:path';
import type { Writable } from 'node:stream';
import ssh2 from 'ssh2';
import type { AuthContext, ClientInfo, Connection, PublicKeyAuthContext, ServerChannel, Session } from 'ssh2';
import { NixfarmError, sshPublicKeyFromBlob, type Logger } from '@nixfarm/shared';
import { AuthorizedKeys } from './authorized-keys.js';
import { loadOrCreateHostKey } from './host-key.js';

export interface StoreEndpointOptions {
  host: string;
  /** 0 picks a free port */
  port: number;
  /** holds the host key and authorized_keys */
  stateDir: string;
  logger: Logger;
  /** program run for `nix-store --serve [--write]` (no shell; looked up in PATH) */
  nixStoreCommand?: string;
  /** program run for `nix-daemon --stdio` */
  nixDaemonCommand?: string;
  /** environment of the Nix processes; default: this process's */
  env?: NodeJS.ProcessEnv;
  /** the workers' keys (default: authorized_keys in stateDir), shared with the coordinator's check of their reports */
  authorizedKeys?: AuthorizedKeys;
}

export interface StoreEndpointAddress {
  host: string;
  port: number;
  /** the public host key line workers pin */
  hostKey: string;
  fingerprint: string;
}

/** Running totals, for metrics. */
export interface StoreEndpointStats {
  connections: number;
  activeConnections: number;
  sessions: number;
  activeSessions: number;
  rejectedAuths: number;
  rejectedRequests: number;
}

/** The only commands a worker may run: Nix's two remote store protocols. */
export type StoreCommandName = 'nix-store --serve' | 'nix-store --serve --write' | 'nix-daemon --stdio';
const STORE_COMMANDS: readonly StoreCommandName[] = ['nix-store --serve', 'nix-store --serve --write', 'nix-daemon --stdio'];

/** The allowed command this exec request names, or undefined. Whitespace around and between words is tolerated; nothing else. */
export function parseStoreCommand(command: string): StoreCommandName | undefined {
  const normalised = command
    .trim()
    .split(/[ \t]+/)
    .join(' ');
  return STORE_COMMANDS.find((allowed) => allowed === normalised);
}

class StoreEndpointError extends NixfarmError {
  constructor(message: string, cause?: unknown) {
    super('store-endpoint-failed', message, { retryable: false, cause });
  }
}

/** sshd's MaxAuthTries: a client offering key after key is probing, not connecting. */
const MAX_AUTH_FAILURES = 6;
/** sshd's LoginGraceTime, shortened: workers authenticate in milliseconds. */
const AUTH_TIMEOUT_MS = 30_000;
/** After SIGTERM, how long a Nix process may take to clean up before SIGKILL. */
const KILL_GRACE_MS = 5_000;
/** Session requests refused outright; anything without a listener is refused by ssh2 too, silently. */
const REFUSED_SESSION_REQUESTS = ['pty', 'shell', 'subsystem', 'sftp', 'env', 'x11', 'auth-agent', 'signal', 'window-change'] as const;

interface ConnectionState {
  id: number;
  log: Logger;
  children: Set<ChildProcess>;
  authFailures: number;
  loggedKeys: Set<string>;
  /** the key the worker logged in with */
  fingerprint?: string;
}

/**
 * The coordinator's store, served over SSH to workers and nothing else:
 * public-key auth against authorized_keys, and exec of exactly
 * `nix-store --serve [--write]` or `nix-daemon --stdio`, so that Nix's
 * own tools (nix-copy-closure, ssh:// and ssh-ng:// stores) work against
 * it unchanged. Many sessions per connection, for OpenSSH ControlMaster.
 */
export class StoreEndpoint {
  private readonly options: StoreEndpointOptions;
  private readonly logger: Logger;
  private readonly authorizedKeys: AuthorizedKeys;
  private server: ssh2.Server | undefined;
  private address: StoreEndpointAddress | undefined;
  private readonly clients = new Map<Connection, ConnectionState>();
  private readonly children = new Set<ChildProcess>();
  private nextConnectionId = 0;
  private readonly counters: StoreEndpointStats = {
    connections: 0,
    activeConnections: 0,
    sessions: 0,
    activeSessions: 0,
    rejectedAuths: 0,
    rejectedRequests: 0,
  };

  constructor(options: StoreEndpointOptions) {
    this.options = options;
    this.logger = options.logger;
    this.authorizedKeys = options.authorizedKeys ?? new AuthorizedKeys(options.stateDir, { logger: this.logger });
  }

  get stats(): StoreEndpointStats {
    return { ...this.counters };
  }

  async start(): Promise<StoreEndpointAddress> {
    if (this.address !== undefined) return this.address;
    const hostKey = await loadOrCreateHostKey(this.options.stateDir);
    const server = new ssh2.Server({ hostKeys: [hostKey.privateKey], ident: 'nixfarm' }, (client, info) => this.onConnection(client, info));
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error) => reject(new StoreEndpointError(`cannot listen on ${this.options.host}:${this.options.port}: ${error.message}`, error));
      server.once('error', onError);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    server.on('error', (error: Error) => this.logger.error({ err: error }, 'store endpoint server error'));
    this.server = server;
    const { port } = server.address() as AddressInfo;
    this.address = { host: this.options.host, port, hostKey: hostKey.publicKeyLine, fingerprint: hostKey.fingerprint };
    this.logger.info({ host: this.options.host, port, fingerprint: hostKey.fingerprint, authorizedKeys: this.authorizedKeys.path }, 'store endpoint listening');
    return this.address;
  }

  /** Disconnects the workers logged in with these keys (revoked: a new login is refused by authorized_keys itself). */
  disconnectKeys(fingerprints: ReadonlySet<string>): void {
    for (const [client, state] of this.clients) {
      if (state.fingerprint === undefined || !fingerprints.has(state.fingerprint)) continue;
      state.log.warn({ fingerprint: state.fingerprint }, 'worker key revoked; disconnecting');
      client.end();
    }
  }

  /** Stops listening, disconnects every worker and waits for their Nix processes to end. */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    this.address = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const client of this.clients.keys()) client.end();
    for (const child of this.children) terminate(child);
    await Promise.all([...this.children].map((child) => exited(child)));
    // A client that ignores the disconnect must not keep stop() waiting.
    await Promise.race([closed, delay(2_000)]);
    this.logger.info('store endpoint stopped');
  }

  private onConnection(client: Connection, info: ClientInfo): void {
    const id = ++this.nextConnectionId;
    const state: ConnectionState = {
      id,
      log: this.logger.child({ connection: id, remote: `${info.ip}:${info.port}` }),
      children: new Set(),
      authFailures: 0,
      loggedKeys: new Set(),
    };
    this.counters.connections += 1;
    this.counters.activeConnections += 1;
    this.clients.set(client, state);
    state.log.debug({ client: info.header.identRaw }, 'ssh connection');

    const authTimer = setTimeout(() => {
      state.log.warn('no successful authentication in time; disconnecting');
      client.end();
    }, AUTH_TIMEOUT_MS);
    authTimer.unref();

    client.on('authentication', (ctx: AuthContext) => {
      this.authenticate(ctx, state, client).catch((error: unknown) => {
        state.log.error({ err: error }, 'authentication failed with an internal error');
        ctx.reject(['publickey']);
      });
    });
    client.on('ready', () => {
      clearTimeout(authTimer);
      state.log.debug('worker authenticated');
    });
    client.on('session', (accept) => this.onSession(accept(), state, client));
    client.on('tcpip', (_accept, reject, request) => this.refuse(state, 'tcpip', { to: `${request.destIP}:${request.destPort}` }, reject));
    client.on('openssh.streamlocal', (_accept, reject, request) => this.refuse(state, 'streamlocal', { socketPath: request.socketPath }, reject));
    // Global requests: port forwarding. (keepalive@openssh.com is answered by ssh2 itself.)
    (client as EventEmitter).on('request', (_accept: unknown, reject: (() => void) | undefined, name: string) =>
      this.refuse(state, 'global request', { name }, reject),
    );
    client.on('error', (error: Error) => state.log.debug({ err: error }, 'ssh connection error'));
    client.on('close', () => {
      clearTimeout(authTimer);
      this.clients.delete(client);
      this.counters.activeConnections -= 1;
      for (const child of state.children) terminate(child);
      state.log.debug('ssh connection closed');
    });
  }

  private async authenticate(ctx: AuthContext, state: ConnectionState, client: Connection): Promise<void> {
    if (ctx.method !== 'publickey') {
      // 'none' is how every client starts: it asks which methods exist.
      if (ctx.method !== 'none') state.log.debug({ method: ctx.method }, 'refusing non-publickey authentication');
      ctx.reject(['publickey']);
      return;
    }
    const reason = await this.checkPublicKey(ctx);
    if (reason === undefined) {
      // Without a signature the client only asks whether this key would do; the signed request follows.
      if (ctx.signature !== undefined) {
        state.fingerprint = fingerprintOf(ctx.key.data);
        state.log.info({ user: ctx.username, fingerprint: state.fingerprint }, 'worker key accepted');
      }
      ctx.accept();
      return;
    }
    this.counters.rejectedAuths += 1;
    state.authFailures += 1;
    this.logRejectedKey(ctx, state, reason);
    ctx.reject(['publickey']);
    if (state.authFailures >= MAX_AUTH_FAILURES) {
      state.log.warn({ failures: state.authFailures }, 'too many rejected keys; disconnecting');
      client.end();
    }
  }

  /** Why this key may not log in, or undefined if it may. Follows ssh2's documented check: algorithm, key data, then signature. */
  private async checkPublicKey(ctx: PublicKeyAuthContext): Promise<string | undefined> {
    const authorised = await this.authorizedKeys.find(ctx.key.data);
    if (authorised === undefined || authorised.verifier.type !== ctx.key.algo) return 'not authorised';
    if (ctx.signature === undefined) return undefined;
    if (ctx.blob === undefined) return 'signature without signed data';
    return authorised.verifier.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true ? undefined : 'bad signature';
  }

  private logRejectedKey(ctx: PublicKeyAuthContext, state: ConnectionState, reason: string): void {
    let described;
    try {
      described = sshPublicKeyFromBlob(ctx.key.data);
    } catch (error) {
      state.log.warn({ user: ctx.username, algo: ctx.key.algo, reason: (error as Error).message }, 'rejected an unusable SSH key');
      return;
    }
    // A client asks about a key, then may sign with it: say it once per connection.
    if (state.loggedKeys.has(described.fingerprint)) return;
    state.loggedKeys.add(described.fingerprint);
    if (reason !== 'not authorised') {
      state.log.warn({ user: ctx.username, fingerprint: described.fingerprint, reason }, `rejected SSH key ${described.fingerprint}: ${reason}`);
      return;
    }
    const authorizeCommand = `nixfarm authorize --state-dir ${shellQuote(resolvePath(this.options.stateDir))} ${shellQuote(described.keyText)}`;
    state.log.warn(
      { user: ctx.username, fingerprint: described.fingerprint, reason, authorizedKeys: this.authorizedKeys.path, authorizeCommand },
      `rejected SSH key ${described.fingerprint} (not in ${this.authorizedKeys.path}); if it is a worker's key, authorise it with: ${authorizeCommand}`,
    );
  }

  private onSession(session: Session, state: ConnectionState, client: Connection): void {
    let used = false;
    session.on('exec', (accept, reject, request) => {
      const command = parseStoreCommand(request.command);
      if (command === undefined || used) {
        this.refuse(state, 'exec', { command: request.command.slice(0, 200) }, reject);
        closeRefusedSession(client, session);
        return;
      }
      used = true;
      this.run(accept(), command, state);
    });
    for (const kind of REFUSED_SESSION_REQUESTS) {
      (session as EventEmitter).on(kind, (_accept: unknown, reject: (() => void) | undefined, request: unknown) => {
        this.refuse(state, kind, kind === 'env' || kind === 'window-change' ? undefined : { request }, reject, kind === 'env');
        // These would have been the session's purpose; without it the session is over.
        if (kind === 'shell' || kind === 'subsystem' || kind === 'sftp') closeRefusedSession(client, session);
      });
    }
    session.on('close', () => closeRefusedSession(client, session));
  }

  private refuse(state: ConnectionState, kind: string, details: Record<string, unknown> | undefined, reject: (() => void) | undefined, quiet = false): void {
    this.counters.rejectedRequests += 1;
    // The client may not have asked for a reply; then there is nothing to send.
    reject?.();
    if (quiet) state.log.debug({ kind, ...details }, 'refused ssh request');
    else state.log.warn({ kind, ...details }, `refused ${kind}: only ${STORE_COMMANDS.join(', ')} are served`);
  }

  private run(channel: ServerChannel, command: StoreCommandName, state: ConnectionState): void {
    const [program, ...args] = command.split(' ') as [string, ...string[]];
    const file = program === 'nix-daemon' ? (this.options.nixDaemonCommand ?? 'nix-daemon') : (this.options.nixStoreCommand ?? 'nix-store');
    const log = state.log.child({ command });
    const started = Date.now();
    this.counters.sessions += 1;
    this.counters.activeSessions += 1;

    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: this.options.env ?? process.env });
    this.children.add(child);
    state.children.add(child);
    let channelClosed = false;
    let finished = false;
    const closedPromise = new Promise<void>((resolve) => channel.once('close', () => resolve()));

    const finish = async (code: number | null, signal: NodeJS.Signals | null): Promise<void> => {
      if (finished) return;
      finished = true;
      // Everything the child wrote must reach the client before the exit status and the close.
      await Promise.race([Promise.all([flushed(channel.stderr), flushed(channel)]), closedPromise]);
      if (!channelClosed) {
        // Without exit-status the OpenSSH client reports 255, and Nix takes that as a failed connection.
        if (code !== null) channel.exit(code);
        else channel.exit((signal ?? 'KILL').replace(/^SIG/, ''), false, '');
        channel.end();
      }
      log.debug({ code, signal, ms: Date.now() - started }, 'store session ended');
    };

    channel.once('close', () => {
      channelClosed = true;
      this.counters.activeSessions -= 1;
      // The client went away first: its Nix process has no one to talk to.
      if (child.exitCode === null && child.signalCode === null) terminate(child);
    });
    child.once('error', (error: Error) => {
      log.error({ err: error, file }, 'cannot start the Nix command');
      if (child.pid === undefined) {
        this.children.delete(child);
        state.children.delete(child);
      }
      if (!channelClosed) channel.stderr.write(`nixfarm: cannot run ${file}: ${error.message}\n`);
      void finish(127, null);
    });
    child.once('close', (code, signal) => {
      this.children.delete(child);
      state.children.delete(child);
      void finish(code, signal);
    });

    // stdin errors (EPIPE) just mean the child exited first; its exit status says the rest.
    child.stdin?.on('error', (error: Error) => log.debug({ err: error }, 'nix stdin closed early'));
    if (child.stdin !== null) channel.pipe(child.stdin);
    child.stdout?.pipe(channel, { end: false });
    child.stderr?.pipe(channel.stderr, { end: false });
    log.debug({ pid: child.pid }, 'store session started');
  }
}

/**
 * ssh2 never sends CHANNEL_CLOSE for a session in which no exec or shell was
 * accepted (server.js returns early for a Session without _channel). A plain
 * OpenSSH client quits anyway, but a ControlMaster waits for that close, so
 * the multiplexed `ssh` that asked for a refused command would hang forever.
 * So close such sessions here, through ssh2's internals, guarded: with a
 * later ssh2 that differs, this does nothing (and the e2e test would say so).
 */
function closeRefusedSession(client: Connection, session: Session): void {
  const internals = session as unknown as {
    _channel?: unknown;
    _chanInfo?: { incoming: { id: number; state: string }; outgoing: { id: number; state: string } };
  };
  const connection = client as unknown as { _protocol?: { channelClose?: (id: number) => void }; _chanMgr?: { remove?: (id: number) => void } };
  const info = internals._chanInfo;
  if (internals._channel !== undefined || info === undefined || info.outgoing.state === 'closed') return;
  if (typeof connection._protocol?.channelClose !== 'function' || typeof connection._chanMgr?.remove !== 'function') return;
  info.outgoing.state = 'closed';
  info.incoming.state = 'closed';
  connection._protocol.channelClose(info.outgoing.id);
  connection._chanMgr.remove(info.incoming.id);
}

function fingerprintOf(blob: Buffer): string {
  try {
    return sshPublicKeyFromBlob(blob).fingerprint;
  } catch {
    return 'unknown';
  }
}

/** Resolves once every write queued so far has been handed to the SSH transport (writes complete in order). */
function flushed(stream: Writable): Promise<void> {
  if (!stream.writable) return Promise.resolve();
  return new Promise((resolve) => stream.write(Buffer.alloc(0), () => resolve()));
}

function terminate(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }, KILL_GRACE_MS);
  timer.unref();
  child.once('exit', () => clearTimeout(timer));
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('close', () => resolve()));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** For messages people paste into a shell: single quotes, with embedded ones escaped. */
function shellQuote(text: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}
