import { existsSync } from 'node:fs';
import { readFile, readlink } from 'node:fs/promises';
import { execa, type ResultPromise } from 'execa';
import {
  NixCommandError,
  ValidationError,
  assertDerivationPath,
  assertStorePath,
  localStorePool,
  parseDerivation,
  type Derivation,
  type ErrorCode,
  type Logger,
  type ServePathInfo,
  type ServePool,
} from '@nixfarm/shared';

/** Every Nix call the coordinator makes goes through this adapter: argument arrays only, never a shell. */
export interface CoordinatorNixOptions {
  logger: Logger;
  /** extra `--option NAME VALUE` pairs for every call */
  nixOptions: ReadonlyArray<readonly [string, string]>;
  /** environment overrides for Nix processes (NIX_CONFIG, ...) */
  env?: Record<string, string>;
}

export interface InstantiateRequest {
  file?: string;
  expr?: string;
  attrs: readonly string[];
  args: ReadonlyArray<{ name: string; expr: string }>;
  argstrs: ReadonlyArray<{ name: string; value: string }>;
  includes: readonly string[];
  /** the working directory for evaluation: relative paths in --expr and --arg resolve against it */
  cwd?: string;
  /** --add-root prefix: nix-instantiate creates <rootPrefix>, <rootPrefix>-2, ... as GC roots for the .drv files */
  rootPrefix: string;
}

export interface InstantiatedAttr {
  /** the -A path that produced it ('' when none was given) */
  attr: string;
  drvPath: string;
  outputName: string;
}

/** Queries per serve request: keeps each message well below any buffer limit. */
const PATHS_PER_QUERY = 10_000;

/** Paths per `nix store sign` process: well below the kernel's limit on argument bytes. */
const PATHS_PER_SIGN = 1_000;

export class CoordinatorNix {
  /** read-only serve sessions with the coordinator's store, for validity queries without a process per call */
  private readonly store: ServePool;

  /**
   * Sessions of the binary cache's own: a `nix-store --serve` process keeps
   * each path's info once asked (signatures included), and the scheduler's
   * sessions ask before an output is signed. The cache asks only after.
   */
  private readonly cacheStore: ServePool;

  constructor(private readonly options: CoordinatorNixOptions) {
    this.store = localStorePool({ nixOptions: options.nixOptions, env: options.env, write: false, maxIdle: 2, peer: "the coordinator's store" });
    this.cacheStore = localStorePool({ nixOptions: options.nixOptions, env: options.env, write: false, maxIdle: 4, peer: "the coordinator's store" });
  }

  private optionArgs(): string[] {
    return this.options.nixOptions.flatMap(([name, value]) => ['--option', name, value]);
  }

  private async run(command: string, args: string[], code?: ErrorCode, cwd?: string): Promise<string> {
    const started = Date.now();
    const result = await execa(command, args, {
      reject: false,
      stdin: 'ignore',
      env: this.options.env,
      maxBuffer: 512 * 1024 * 1024,
      ...(cwd === undefined ? {} : { cwd }),
    });
    if (result.failed && result.exitCode === undefined && cwd !== undefined && !existsSync(cwd)) {
      throw new ValidationError(
        `working directory ${cwd} does not exist on the coordinator machine: give absolute paths, or run nixfarm build on the coordinator machine`,
      );
    }
    this.options.logger.debug({ command, argc: args.length, ms: Date.now() - started, exitCode: result.exitCode }, 'nix call');
    if (result.exitCode !== 0) {
      throw new NixCommandError([command, ...args.slice(0, 12)], result.exitCode, String(result.stderr), code === undefined ? {} : { code });
    }
    return String(result.stdout);
  }

  /** The system this machine's Nix builds for natively (what preferLocalBuild derivations need). */
  async currentSystem(): Promise<string> {
    return JSON.parse((await this.run('nix-instantiate', ['--eval', '--expr', 'builtins.currentSystem', ...this.optionArgs()])).trim()) as string;
  }

  async version(): Promise<string> {
    return (await this.run('nix-store', ['--version'])).trim();
  }

  /** nix-instantiate, as nix-build would call it; evaluation errors carry Nix's own message. */
  async instantiate(req: InstantiateRequest): Promise<InstantiatedAttr[]> {
    const args: string[] = [];
    for (const include of req.includes) args.push('-I', include);
    for (const { name, expr } of req.args) args.push('--arg', name, expr);
    for (const { name, value } of req.argstrs) args.push('--argstr', name, value);
    for (const attr of req.attrs) args.push('-A', attr);
    args.push('--add-root', req.rootPrefix, ...this.optionArgs());
    if (req.expr !== undefined) args.push('--expr', req.expr);
    else if (req.file !== undefined) args.push('--', req.file);
    const stdout = await this.run('nix-instantiate', args, 'evaluation-failed', req.cwd);
    const lines = stdout.split('\n').filter((l) => l.length > 0);
    // With --add-root, nix-instantiate prints the root symlinks (plus `!output`), not the store paths.
    // An attribute may evaluate to a set or list of derivations; then the lines no longer pair with -A flags.
    const attrs = lines.length === req.attrs.length ? req.attrs : lines.map(() => req.attrs.join(' '));
    const out: InstantiatedAttr[] = [];
    for (const [i, line] of lines.entries()) {
      const bang = line.lastIndexOf('!');
      const root = bang >= 0 ? line.slice(0, bang) : line;
      const outputName = bang >= 0 ? line.slice(bang + 1) : 'out';
      const drvPath = root.startsWith('/nix/store/') ? root : await readlink(root);
      out.push({ attr: attrs[i] ?? '', drvPath: assertDerivationPath(drvPath), outputName });
    }
    return out;
  }

  async readDerivation(drvPath: string): Promise<Derivation> {
    assertDerivationPath(drvPath);
    return parseDerivation(drvPath, await readFile(drvPath, 'utf8'));
  }

  /** Which of these paths are not valid in the local store. */
  async invalidPaths(paths: readonly string[]): Promise<Set<string>> {
    const invalid = new Set<string>();
    for (let i = 0; i < paths.length; i += PATHS_PER_QUERY) {
      const chunk = paths.slice(i, i + PATHS_PER_QUERY);
      const valid = await this.store.use((session) => session.connection.queryValidPaths(chunk));
      for (const p of chunk) if (!valid.has(p)) invalid.add(p);
    }
    return invalid;
  }

  /**
   * NAR hashes of those of `paths` that are valid in the local store (an
   * invalid path is absent): validity and contents in one query per chunk.
   */
  async narHashes(paths: readonly string[]): Promise<Map<string, string>> {
    const hashes = new Map<string, string>();
    for (let i = 0; i < paths.length; i += PATHS_PER_QUERY) {
      const chunk = paths.slice(i, i + PATHS_PER_QUERY);
      const infos = await this.store.use((session) => session.connection.queryPathInfos(chunk));
      // Nix 2.x always sends the hash to this client (minor version 6); '' would only come from a pre-2.0 server.
      for (const [path, info] of infos) hashes.set(path, info.narHash ?? '');
    }
    return hashes;
  }

  /**
   * `nix copy --to STORE`: the paths' closures with their signatures into a
   * binary cache (file:// or http(s)://, which Nix fills by PUT). Paths the
   * cache already has are skipped by Nix itself.
   */
  async copyTo(storeUrl: string, paths: readonly string[]): Promise<void> {
    for (const p of paths) assertStorePath(p);
    await this.run(
      'nix',
      ['--extra-experimental-features', 'nix-command', 'copy', ...this.optionArgs(), '--to', storeUrl, '--', ...paths],
      'cache-upload-failed',
    );
  }

  /** The closure of the paths in the local store (every path they reference, transitively, and themselves). */
  async closure(paths: readonly string[]): Promise<string[]> {
    for (const p of paths) assertStorePath(p);
    const stdout = await this.run('nix-store', ['--query', '--requisites', ...this.optionArgs(), '--', ...paths]);
    return stdout.split('\n').filter((l) => l.length > 0);
  }

  /**
   * Adds a signature by the key in `keyFile` to each of `paths` in the
   * store's database (where `nix copy` and `nix path-info --sigs` find it):
   * one process per batch, not per path.
   */
  async signPaths(keyFile: string, paths: readonly string[]): Promise<void> {
    for (const p of paths) assertStorePath(p);
    for (let i = 0; i < paths.length; i += PATHS_PER_SIGN) {
      const chunk = paths.slice(i, i + PATHS_PER_SIGN);
      await this.run('nix', ['--extra-experimental-features', 'nix-command', 'store', 'sign', '--key-file', keyFile, ...this.optionArgs(), ...chunk]);
    }
  }

  /** Path infos (references, NAR hash and size, signatures) of those of `paths` valid in the store, for the binary cache. */
  async signedPathInfos(paths: readonly string[]): Promise<Map<string, ServePathInfo>> {
    return this.cacheStore.use((session) => session.connection.queryPathInfos(paths));
  }

  /** `nix-store --dump PATH`: the path's NAR on the process's stdout, streamed, never buffered. */
  dumpPath(path: string): ResultPromise<{ stdin: 'ignore'; stdout: 'pipe'; stderr: 'pipe'; buffer: false; reject: false }> {
    assertStorePath(path);
    return execa('nix-store', ['--dump', path], { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe', buffer: false, reject: false, env: this.options.env });
  }

  /** Ends the serve sessions. */
  async close(): Promise<void> {
    await Promise.all([this.store.close(), this.cacheStore.close()]);
  }
}
