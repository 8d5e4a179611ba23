/**
 * Constants of Nix's serve protocol (`nix-store --serve`, what `ssh://` stores
 * and Hydra's queue runner speak). nixfarm announces minor version 5: every
 * Nix from 2.3 on answers it the same way, and no field that later versions
 * added is needed here.
 */
export const SERVE_MAGIC_1 = 0x390c9deb;
export const SERVE_MAGIC_2 = 0x5452eecb;
export const SERVE_CLIENT_VERSION = 0x206;

export const ServeCommand = {
  QueryValidPaths: 1,
  QueryPathInfos: 2,
  DumpStorePath: 3,
  ImportPaths: 4,
  ExportPaths: 5,
  BuildPaths: 6,
  QueryClosure: 7,
  BuildDerivation: 8,
} as const;

/** BuildResult::Status, in Nix's order. */
export const NIX_BUILD_STATUSES = [
  'Built',
  'Substituted',
  'AlreadyValid',
  'PermanentFailure',
  'InputRejected',
  'OutputRejected',
  'TransientFailure',
  'CachedFailure',
  'TimedOut',
  'MiscFailure',
  'DependencyFailed',
  'LogLimitExceeded',
  'NotDeterministic',
  'ResolvesToAlreadyValid',
  'NoSubstituters',
] as const;
export type NixBuildStatus = (typeof NIX_BUILD_STATUSES)[number] | 'Unknown';

export function nixBuildStatus(code: number): NixBuildStatus {
  return NIX_BUILD_STATUSES[code] ?? 'Unknown';
}

/** What QueryPathInfos tells about one valid path. */
export interface ServePathInfo {
  path: string;
  /** the .drv that built it, when the store knows */
  deriver: string | undefined;
  references: string[];
  narSize: number;
  /** "sha256:<base-32>" as Nix prints it; undefined from a server older than minor version 4 */
  narHash: string | undefined;
  /** content address, for content-addressed paths */
  ca: string | undefined;
  sigs: string[];
}

/** A derivation as the serve protocol sends it: the .drv's contents with inputSrcs widened to every input path. */
export interface BasicDerivation {
  outputs: Record<string, { path: string; hashAlgo: string; hash: string }>;
  /** input sources and the used outputs of input derivations: all must be valid in the building store */
  inputSrcs: string[];
  platform: string;
  builder: string;
  args: string[];
  env: Record<string, string>;
}

export interface ServeBuildSettings {
  /** 0 means no limit */
  maxSilentSeconds: number;
  /** 0 means no limit */
  timeoutSeconds: number;
  /** bytes; 0 means no limit */
  maxLogSize: number;
}

export interface ServeBuildResult {
  status: NixBuildStatus;
  statusCode: number;
  errorMessage: string;
  startTime: number;
  stopTime: number;
}

export function buildSucceeded(status: NixBuildStatus): boolean {
  return status === 'Built' || status === 'Substituted' || status === 'AlreadyValid' || status === 'ResolvesToAlreadyValid';
}
