import { spawn, type ChildProcess } from 'node:child_process';
import { ServeConnection } from './serve-connection.js';
import { ServeConnectionError } from './wire-reader.js';

export interface ServeSessionOptions {
  /** e.g. `nix-store` with `--serve --write`, or `ssh` with `-F config host nix-store --serve --write` */
  command: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** names the server in errors, e.g. "the coordinator's store" */
  peer: string;
  /**
   * Start the server in a process group of its own, so that a signal meant for
   * the owner's group (Ctrl-C, a service manager's SIGTERM) does not cut short
   * a build or copy the owner means to finish; closing the session stops it.
   */
  ownProcessGroup?: boolean;
}

/** Lines of the server's stderr kept for error messages. */
const STDERR_TAIL = 20;

/**
 * A serve-protocol server process (local `nix-store --serve`, or one over
 * SSH) and the session with it. The process lives as long as the session, so
 * its start-up cost is paid once, not per copy or build.
 */
export class ServeSession {
  /** receives the server's stderr line by line: a build's log while buildDerivation runs */
  onStderrLine: ((line: string) => void) | undefined;

  private constructor(
    readonly process: ChildProcess,
    readonly connection: ServeConnection,
  ) {}

  static async start(options: ServeSessionOptions): Promise<ServeSession> {
    const child = spawn(options.command, [...options.args], { stdio: ['pipe', 'pipe', 'pipe'], env: options.env, detached: options.ownProcessGroup === true });
    const tail: string[] = [];
    let session: ServeSession | undefined;
    let partial = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        tail.push(line);
        if (tail.length > STDERR_TAIL) tail.shift();
        session?.onStderrLine?.(line);
      }
    });
    const connectionPromise = ServeConnection.open({ input: child.stdin!, output: child.stdout!, peer: options.peer, stderrTail: () => tail.join('\n') });
    const exited = new Promise<never>((_, reject) => {
      child.once('error', (error) => reject(new ServeConnectionError(`cannot start ${options.command} for ${options.peer}: ${error.message}`, error)));
    });
    child.once('exit', (code, signal) => {
      // stdout 'end' usually reports this first; this covers a process that dies with its pipes held open elsewhere
      setTimeout(
        () =>
          session?.connection.reader.fail(
            new ServeConnectionError(`${options.peer}: server exited (${signal ?? code})${tail.length > 0 ? `: ${tail.join('\n')}` : ''}`),
          ),
        100,
      );
    });
    let connection: ServeConnection;
    try {
      connection = await Promise.race([connectionPromise, exited]);
    } catch (error) {
      child.kill('SIGKILL');
      throw error;
    }
    session = new ServeSession(child, connection);
    return session;
  }

  get broken(): boolean {
    return this.connection.broken !== undefined || this.process.exitCode !== null || this.process.signalCode !== null;
  }

  /** Ends the session: Nix sees the hang-up (interrupting a running build), then exits. Killed if it lingers. */
  close(graceMs = 3000): Promise<void> {
    this.connection.close();
    if (this.process.exitCode !== null || this.process.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.process.kill('SIGKILL');
        resolve();
      }, graceMs);
      timer.unref();
      this.process.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
