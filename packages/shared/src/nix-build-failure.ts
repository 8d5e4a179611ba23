import type { NixFailureCode } from './error-codes.js';
import type { NixBuildStatus } from './serve/serve-protocol.js';

/**
 * Whose fault a failed Nix build is:
 * - `derivation`: the derivation's own, the same on any machine (never retried);
 * - `machine`: the building machine's Nix setup (build users, sandbox, platform),
 *   not the derivation's, and no use retrying on that machine until it is fixed;
 * - `transient`: anything else (a lost input, a full disk, a flaky fetch): retried.
 */
export type NixFailureKind = 'derivation' | 'machine' | 'transient';

export interface NixBuildFailure {
  kind: NixFailureKind;
  /** for machines, e.g. nix-output-cycle, nix-build-users-missing, nix-builder-failed */
  code: NixFailureCode;
  /** Nix's own message, without colours */
  message: string;
  /** machine faults: what to change on that machine so that its Nix builds; one line per way out */
  fix?: string;
}

/** Nix's build statuses that say the builder ran and its result was refused: the derivation's own fault. */
const DERIVATION_STATUSES: Partial<Record<NixBuildStatus, NixFailureCode>> = {
  PermanentFailure: 'nix-builder-failed',
  InputRejected: 'nix-input-rejected',
  OutputRejected: 'nix-output-rejected',
  NotDeterministic: 'nix-not-deterministic',
  CachedFailure: 'nix-cached-failure',
};

interface Rule {
  pattern: RegExp;
  kind: Exclude<NixFailureKind, 'transient'>;
  code: NixFailureCode;
  fix?: (match: RegExpExecArray) => string;
}

/** Nix's build users, as Nix's installer and Debian's nix-setup-systemd make them; one line per way out. */
function buildUsersFix(group: string, groupExists: boolean): string {
  return [
    "create Nix's build users as root (`node scripts/ensure-machine.mjs`, run by `npm run demo`, does this):",
    ...(groupExists ? [] : [`  groupadd --system ${group}`]),
    `  for i in $(seq 1 32); do useradd --system --gid ${group} --groups ${group} --no-user-group --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin ${group}$i; done`,
    'or build without build users: `build-users-group =` in nix.conf',
  ].join('\n');
}

function featureList(text: string): string[] {
  return text
    .split(',')
    .map((f) => f.trim())
    .filter((f) => f !== '');
}

/** The settings that would let this Nix take the build: another platform, missing features. */
function platformFix(platform: string, required: readonly string[], own: string, has: readonly string[]): string {
  const missing = required.filter((f) => !has.includes(f));
  const settings = [
    ...(platform === own ? [] : [`extra-platforms = ${platform}`]),
    ...(missing.length === 0 ? [] : [`extra-system-features = ${missing.join(' ')}`]),
  ];
  return [
    `make this Nix build it: ${settings.join(' and ') || `extra-platforms = ${platform}`} in nix.conf (or --nix-option)`,
    "or stop sending it such builds (a worker's --system and --features say what it takes)",
  ].join('\n');
}

const SANDBOX_FIX = [
  "let this machine set up Nix's build sandbox (user namespaces: sysctl user.max_user_namespaces, and kernel.unprivileged_userns_clone where it exists)",
  'or, if builds here need not be sandboxed, turn it off: `sandbox = false` in nix.conf, or --nix-option sandbox=false',
].join('\n');

/**
 * Nix 2.8's messages, by whose fault they are (libstore/lock.cc,
 * build/local-derivation-goal.cc, build/derivation-goal.cc). Through the
 * serve protocol most of them arrive as MiscFailure, so the status alone
 * cannot tell a cyclic derivation from a machine without build users.
 */
const RULES: readonly Rule[] = [
  // Build users (libstore/lock.cc): every build on that machine fails alike.
  {
    pattern: /the group '([^']*)' specified in 'build-users-group' does not exist/,
    kind: 'machine',
    code: 'nix-build-users-missing',
    fix: (m) => buildUsersFix(m[1]!, false),
  },
  { pattern: /the build users group '([^']*)' has no members/, kind: 'machine', code: 'nix-build-users-missing', fix: (m) => buildUsersFix(m[1]!, true) },
  {
    pattern: /the user '[^']*' in the group '([^']*)' does not exist/,
    kind: 'machine',
    code: 'nix-build-users-missing',
    fix: (m) => buildUsersFix(m[1]!, true),
  },
  {
    pattern: /the Nix user should not be a member of '([^']*)'/,
    kind: 'machine',
    code: 'nix-build-users-misconfigured',
    fix: (m) => `take the user Nix runs as out of the build users group: gpasswd --delete USER ${m[1]}`,
  },
  // The sandbox cannot be set up.
  {
    pattern: /cannot perform a sandboxed build because user namespaces are not enabled/,
    kind: 'machine',
    code: 'nix-sandbox-unavailable',
    fix: () => SANDBOX_FIX,
  },
  { pattern: /creating sandboxed builder process using clone\(\)/, kind: 'machine', code: 'nix-sandbox-unavailable', fix: () => SANDBOX_FIX },
  { pattern: /unable to start build process/, kind: 'machine', code: 'nix-sandbox-unavailable', fix: () => SANDBOX_FIX },
  { pattern: /sandboxing builds is not supported on this platform/, kind: 'machine', code: 'nix-sandbox-unavailable', fix: () => SANDBOX_FIX },
  { pattern: /while setting up the build environment/, kind: 'machine', code: 'nix-sandbox-unavailable', fix: () => SANDBOX_FIX },
  // The machine was given a build its Nix does not take (it advertised more than its Nix builds).
  {
    pattern: /a '([^']*)' with features \{([^}]*)\} is required to build '[^']*', but I am a '([^']*)' with features \{([^}]*)\}/,
    kind: 'machine',
    code: 'nix-platform-mismatch',
    fix: (m) => platformFix(m[1]!, featureList(m[2]!), m[3]!, featureList(m[4]!)),
  },
  // The derivation's own fault: the same on every machine.
  { pattern: /cycle detected in (build of|the references of)/, kind: 'derivation', code: 'nix-output-cycle' },
  { pattern: /failed to produce output path for output/, kind: 'derivation', code: 'nix-output-missing' },
  { pattern: /is not allowed to refer to (the following paths|path)/, kind: 'derivation', code: 'nix-output-references-refused' },
  { pattern: /is too large at \d+ bytes; limit is \d+ bytes/, kind: 'derivation', code: 'nix-output-too-large' },
  // A farm's workers share one sandbox policy: a derivation that asks for an exception fails on all of them.
  { pattern: /has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'/, kind: 'derivation', code: 'nix-sandbox-refused' },
  { pattern: /requested impure path '[^']*', but it was not in allowed-impure-host-deps/, kind: 'derivation', code: 'nix-sandbox-refused' },
  {
    pattern: /odd number of tokens in 'exportReferencesGraph'|'exportReferencesGraph' contains a non-store path/,
    kind: 'derivation',
    code: 'nix-derivation-invalid',
  },
];

/** Nix colours its messages even through a pipe; none of that belongs in a report. */
export function stripTerminalCodes(text: string): string {
  return text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
}

/**
 * The one place that reads Nix's message text: which of the three kinds a
 * failed build is, with a code everything downstream uses instead. Call it
 * for results that are not a success, a timeout or a log past its limit.
 */
export function classifyNixBuildFailure(status: NixBuildStatus, errorMessage: string): NixBuildFailure {
  const message = stripTerminalCodes(errorMessage).trim() || `Nix ended the build with ${status} and no message`;
  for (const rule of RULES) {
    const match = rule.pattern.exec(message);
    if (match === null) continue;
    return { kind: rule.kind, code: rule.code, message, ...(rule.fix === undefined ? {} : { fix: rule.fix(match) }) };
  }
  const code = DERIVATION_STATUSES[status];
  if (code !== undefined) return { kind: 'derivation', code, message };
  // MiscFailure, TransientFailure (a fixed-output fetch, a full disk), DependencyFailed (a vanished input), ...: Hydra retries these too.
  return { kind: 'transient', code: 'nix-build-not-done', message };
}
