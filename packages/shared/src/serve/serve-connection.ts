import type { ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import type { ExporterStart } from './nix-export.js';
import { assertDerivationPath, assertStorePath } from '../store-path.js';
import { WireWriter } from './wire-writer.js';
import { ServeConnectionError, WireReader } from './wire-reader.js';
import { readNarRegularFile } from './nar-reader.js';
import {
  SERVE_CLIENT_VERSION,
  SERVE_MAGIC_1,
  SERVE_MAGIC_2,
  ServeCommand,
  nixBuildStatus,
  type BasicDerivation,
  type ServeBuildResult,
  type ServePathInfo,
  type ServeBuildSettings,
} from './serve-protocol.js';

export interface ServeConnectionOptions {
  /** the server's stdin */
  input: Writable;
  /** the server's stdout */
  output: Readable;
  /** names the server in errors */
  peer: string;
  stderrTail?: () => string;
}

/**
 * One client session of Nix's serve protocol. Commands are strictly one at a
 * time (the protocol has no request ids): a session belongs to one user at a
 * time, which ServePool guarantees. After any error the session is broken
 * and must be thrown away.
 */
export class ServeConnection {
  readonly reader: WireReader;
  readonly input: Writable;
  readonly peer: string;
  serverVersion = 0;
  private busy = false;

  private constructor(options: ServeConnectionOptions) {
    this.input = options.input;
    this.peer = options.peer;
    this.reader = new WireReader(options.output, options.peer, options.stderrTail);
    // A write to a dead peer surfaces as a failed read; never as an unhandled error.
    this.input.on('error', (error) => this.reader.fail(new ServeConnectionError(`${this.peer}: ${error.message}`, error)));
  }

  static async open(options: ServeConnectionOptions): Promise<ServeConnection> {
    const connection = new ServeConnection(options);
    connection.send(new WireWriter().u64(SERVE_MAGIC_1).u64(SERVE_CLIENT_VERSION));
    const magic = await connection.reader.readU64();
    if (magic !== SERVE_MAGIC_2) throw new ServeConnectionError(`${options.peer} does not speak Nix's serve protocol (greeting ${magic.toString(16)})`);
    connection.serverVersion = await connection.reader.readU64();
    if (connection.serverVersion >> 8 !== 2)
      throw new ServeConnectionError(`${options.peer} speaks serve protocol ${connection.serverVersion.toString(16)}; nixfarm needs major version 2`);
    return connection;
  }

  get broken(): Error | undefined {
    return this.reader.failed;
  }

  send(message: WireWriter): void {
    this.input.write(message.toBuffer());
  }

  /** Runs one exchange; a second concurrent one is a programming error. */
  async exchange<T>(body: () => Promise<T>): Promise<T> {
    if (this.busy) throw new Error(`${this.peer}: serve session used by two callers at once`);
    if (this.reader.failed !== undefined) throw this.reader.failed;
    this.busy = true;
    try {
      return await body();
    } finally {
      this.busy = false;
    }
  }

  /** The subset of `paths` that is valid in the server's store. */
  queryValidPaths(paths: readonly string[]): Promise<Set<string>> {
    for (const p of paths) assertStorePath(p);
    return this.exchange(async () => {
      this.send(new WireWriter().u64(ServeCommand.QueryValidPaths).u64(0).u64(0).strings(paths));
      return new Set(await this.reader.readStrings());
    });
  }

  /** The closure of `paths` (which must be valid) in the server's store. */
  queryClosure(paths: readonly string[]): Promise<string[]> {
    for (const p of paths) assertStorePath(p);
    return this.exchange(async () => {
      this.send(new WireWriter().u64(ServeCommand.QueryClosure).u64(0).strings(paths));
      return this.reader.readStrings();
    });
  }

  /**
   * What the server's store records about each of `paths` that is valid
   * there; invalid ones are left out. NAR hash, content address and
   * signatures come only from servers of minor version 4 on (every Nix since
   * 2.0); older ones leave them empty.
   */
  queryPathInfos(paths: readonly string[]): Promise<Map<string, ServePathInfo>> {
    for (const p of paths) assertStorePath(p);
    return this.exchange(async () => {
      this.send(new WireWriter().u64(ServeCommand.QueryPathInfos).strings(paths));
      const infos = new Map<string, ServePathInfo>();
      for (;;) {
        const path = await this.reader.readString();
        if (path === '') return infos;
        assertStorePath(path);
        const deriver = await this.reader.readString();
        if (deriver !== '') assertStorePath(deriver);
        const references = await this.reader.readStrings();
        for (const r of references) assertStorePath(r);
        await this.reader.readU64(); // download size: Nix sends the NAR size again
        const narSize = await this.reader.readU64();
        const info: ServePathInfo = { path, deriver: deriver === '' ? undefined : deriver, references, narSize, narHash: undefined, ca: undefined, sigs: [] };
        if ((this.serverVersion & 0xff) >= 4) {
          const narHash = await this.reader.readString();
          const ca = await this.reader.readString();
          info.narHash = narHash === '' ? undefined : narHash;
          info.ca = ca === '' ? undefined : ca;
          info.sigs = await this.reader.readStrings();
        }
        infos.set(path, info);
      }
    });
  }

  /** The contents of a store path that is a single file, e.g. a .drv. */
  readFile(path: string): Promise<Buffer> {
    assertStorePath(path);
    return this.exchange(async () => {
      this.send(new WireWriter().u64(ServeCommand.DumpStorePath).string(path));
      return readNarRegularFile(this.reader, path);
    });
  }

  /**
   * Builds one derivation whose inputs are valid in the server's store. The
   * build log arrives on the server's stderr while this runs.
   */
  buildDerivation(drvPath: string, drv: BasicDerivation, settings: ServeBuildSettings): Promise<ServeBuildResult> {
    assertDerivationPath(drvPath);
    for (const p of drv.inputSrcs) assertStorePath(p);
    return this.exchange(async () => {
      const w = new WireWriter().u64(ServeCommand.BuildDerivation).string(drvPath);
      const outputs = Object.entries(drv.outputs);
      w.u64(outputs.length);
      for (const [name, o] of outputs) w.string(name).string(o.path).string(o.hashAlgo).string(o.hash);
      w.strings(drv.inputSrcs).string(drv.platform).string(drv.builder).strings(drv.args);
      const env = Object.entries(drv.env);
      w.u64(env.length);
      for (const [k, v] of env) w.string(k).string(v);
      // build settings, minor version >= 3: max-silent-time, timeout, max-log-size, repeat, enforce-determinism
      w.u64(settings.maxSilentSeconds).u64(settings.timeoutSeconds).u64(settings.maxLogSize).u64(0).u64(0);
      this.send(w);
      const statusCode = await this.reader.readU64();
      const errorMessage = await this.reader.readString();
      await this.reader.readU64(); // times built
      await this.reader.readU64(); // is non-deterministic
      const startTime = await this.reader.readU64();
      const stopTime = await this.reader.readU64();
      if ((this.serverVersion & 0xff) >= 6) {
        // built outputs (content-addressed realisations), unused: the outputs are known from the derivation
        const count = await this.reader.readU64();
        for (let i = 0; i < count; i++) {
          await this.reader.readString();
          await this.reader.readString();
        }
      }
      return { status: nixBuildStatus(statusCode), statusCode, errorMessage, startTime, stopTime };
    });
  }

  /**
   * Sends ImportPaths here and ExportPaths to `source`, relays the export
   * stream, and returns once this server has registered every path. Nix
   * imports each path whole or not at all. On any failure both sessions are
   * mid-stream, so both are closed. Returns the bytes of the export stream.
   */
  async importFrom(source: ServeConnection, paths: readonly string[]): Promise<number> {
    for (const p of paths) assertStorePath(p);
    if (paths.length === 0) return 0;
    let bytes = 0;
    try {
      await this.exchange(() =>
        source.exchange(async () => {
          this.send(new WireWriter().u64(ServeCommand.ImportPaths));
          source.reader.startRelay(this.input);
          let unsubscribe = (): void => undefined;
          try {
            source.send(new WireWriter().u64(ServeCommand.ExportPaths).u64(0).strings(paths));
            const done = this.reader.readU64();
            done.catch(() => undefined);
            // If the exporter dies, the importer would wait for more bytes forever.
            const exporterDied = new Promise<never>((_, reject) => {
              unsubscribe = source.reader.onFailure(reject);
            });
            const reply = await Promise.race([done, exporterDied]);
            if (reply !== 1) throw new ServeConnectionError(`${this.peer} answered ${reply} to an import of ${paths.length} paths`);
          } finally {
            unsubscribe();
            bytes = source.reader.stopRelay();
          }
        }),
      );
      return bytes;
    } catch (error) {
      this.close();
      source.close();
      throw error;
    }
  }

  /**
   * Like importFrom, but the export stream comes from a local process that
   * writes it straight into this session's input (`start` hands it the input
   * stream as its stdout): no byte passes through this process, so each
   * crosses one pipe and one event loop fewer. The ImportPaths command is
   * flushed before the exporter starts, so the stream follows it in order. On
   * any failure the session is mid-stream and is closed, and the exporter killed.
   */
  async importFromProcess(paths: readonly string[], start: ExporterStart): Promise<void> {
    for (const p of paths) assertStorePath(p);
    if (paths.length === 0) return;
    let exporter: ChildProcess | undefined;
    try {
      await this.exchange(async () => {
        await new Promise<void>((resolve, reject) =>
          this.input.write(new WireWriter().u64(ServeCommand.ImportPaths).toBuffer(), (error) => (error ? reject(error) : resolve())),
        );
        const child = start(paths, this.input);
        exporter = child;
        let stderr = '';
        child.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString('utf8')).slice(-4000)));
        const exported = new Promise<void>((resolve, reject) => {
          child.once('error', (error) => reject(new ServeConnectionError(`cannot start the export for ${this.peer}: ${error.message}`, error)));
          child.once('close', (code, signal) =>
            code === 0
              ? resolve()
              : reject(
                  new ServeConnectionError(`nix-store --export of ${paths.length} paths for ${this.peer} exited with ${code ?? signal}: ${stderr.trim()}`),
                ),
          );
        });
        const reply = this.reader.readU64();
        // whichever fails first is the error: a dead exporter leaves the importer waiting for bytes, a dead importer stops the exporter
        const [, answer] = await Promise.all([exported, reply]);
        if (answer !== 1) throw new ServeConnectionError(`${this.peer} answered ${answer} to an import of ${paths.length} paths`);
      });
    } catch (error) {
      this.close();
      if (exporter !== undefined && exporter.exitCode === null && exporter.signalCode === null) exporter.kill('SIGKILL');
      throw error;
    }
  }

  /** Closing stdin ends the server (and interrupts a running build: Nix watches for the hang-up). */
  close(): void {
    this.input.end();
    this.reader.fail(new ServeConnectionError(`${this.peer}: session closed`));
  }
}
