import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NixSetupError, buildFinishedEventSchema, classifyNixBuildFailure, stripTerminalCodes, type NixBuildStatus } from '@nixfarm/shared';

/**
 * What Nix 2.8's `nix-store --serve` answered to BuildDerivation on this
 * machine kind, byte for byte (colours included: Nix colours even through a
 * pipe). Most arrive as MiscFailure, so only the text tells them apart.
 */
const DRV = '/nix/store/850wy7f9009qm4pnxfrhmlmx7fa3q7jy-cyclic-outputs.drv';
const SEEN: Record<string, { status: NixBuildStatus; message: string }> = {
  cycle: {
    status: 'MiscFailure',
    message: `\x1b[31;1merror:\x1b[0m cycle detected in build of '\x1b[35;1m${DRV}\x1b[0m' in the references of output '\x1b[35;1ma\x1b[0m' from output '\x1b[35;1mb\x1b[0m'`,
  },
  missingGroup: {
    status: 'MiscFailure',
    message: "\x1b[31;1merror:\x1b[0m the group '\x1b[35;1mnixfarm-no-such-group\x1b[0m' specified in 'build-users-group' does not exist",
  },
  emptyGroup: { status: 'MiscFailure', message: "\x1b[31;1merror:\x1b[0m the build users group '\x1b[35;1mnogroup\x1b[0m' has no members" },
  platform: {
    status: 'MiscFailure',
    message:
      "\x1b[31;1merror:\x1b[0m a '\x1b[35;1mx86_64-darwin\x1b[0m' with features {\x1b[35;1m\x1b[0m} is required to build '\x1b[35;1m/nix/store/hvikm9813gznxj5sjy0yzn61c8j8sc14-darwin.drv\x1b[0m', but I am a '\x1b[35;1mx86_64-linux\x1b[0m' with features {\x1b[35;1mbenchmark, big-parallel, kvm, nixos-test\x1b[0m}",
  },
  features: {
    status: 'MiscFailure',
    message:
      "\x1b[31;1merror:\x1b[0m a '\x1b[35;1mx86_64-linux\x1b[0m' with features {\x1b[35;1mkvm, kvm-nope\x1b[0m} is required to build '\x1b[35;1m/nix/store/mpvm8c8rrpm1wz2m6cjhi0c6ywd8mjch-feat.drv\x1b[0m', but I am a '\x1b[35;1mx86_64-linux\x1b[0m' with features {\x1b[35;1mbenchmark, big-parallel, kvm, nixos-test\x1b[0m}",
  },
  noChroot: {
    status: 'MiscFailure',
    message:
      "\x1b[31;1merror:\x1b[0m derivation '\x1b[35;1m/nix/store/g1f18jdp5bnqwyw6kpb1rc6b246fny70-nochroot.drv\x1b[0m' has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'",
  },
  builderFailed: {
    status: 'PermanentFailure',
    message: "\x1b[0mbuilder for '\x1b[35;1m/nix/store/4zahm7cr4nmkwvrdhdh6v2h5v6cv5b5d-failing.drv\x1b[0m' failed with exit code 3",
  },
  noOutput: {
    status: 'OutputRejected',
    message:
      "\x1b[0mbuilder for '\x1b[35;1m/nix/store/lj53yihfiywdv5xnyf3cypq6m5l8yaiv-noout.drv\x1b[0m' failed to produce output path for output '\x1b[35;1mout\x1b[0m' at '\x1b[35;1m/nix/store/lj53yihfiywdv5xnyf3cypq6m5l8yaiv-noout.drv.chroot/nix/store/cr6k2xm1r88x5lgqi5splgnxm42dsdjy-noout\x1b[0m'",
  },
  badReference: {
    status: 'OutputRejected',
    message:
      "\x1b[0moutput '\x1b[35;1m/nix/store/22pfwpxh4qg0x1jplbl7iry73sy85ixn-badref\x1b[0m' is not allowed to refer to the following paths:\x1b[35;1m\n  /nix/store/0c0ymkk6hv1dbfz5fk7x8b0c7c3l0zvm-busybox\x1b[0m",
  },
  sandboxPath: {
    status: 'MiscFailure',
    message: "\x1b[31;1merror:\x1b[0m getting attributes of path '\x1b[35;1m/nonexistent-nixfarm\x1b[0m': \x1b[35;1mNo such file or directory\x1b[0m",
  },
};

describe('classifyNixBuildFailure: whose fault a failed Nix build is', () => {
  it("calls an output cycle the derivation's own fault, though Nix reports it as MiscFailure", () => {
    const failure = classifyNixBuildFailure(SEEN.cycle!.status, SEEN.cycle!.message);
    assert.equal(failure.kind, 'derivation');
    assert.equal(failure.code, 'nix-output-cycle');
    assert.equal(
      failure.message,
      `error: cycle detected in build of '${DRV}' in the references of output 'a' from output 'b'`,
      "colours are gone, the words are Nix's",
    );
    assert.equal(failure.fix, undefined);
  });

  it("calls missing build users the machine's setup, with the group's own name in the fix", () => {
    const failure = classifyNixBuildFailure(SEEN.missingGroup!.status, SEEN.missingGroup!.message);
    assert.equal(failure.kind, 'machine');
    assert.equal(failure.code, 'nix-build-users-missing');
    assert.match(
      failure.fix ?? '',
      /^create Nix's build users as root \(`node scripts\/ensure-machine\.mjs`, run by `npm run demo`, does this\):\n {2}groupadd --system nixfarm-no-such-group\n/,
    );
    assert.match(
      failure.fix ?? '',
      /useradd --system --gid nixfarm-no-such-group --groups nixfarm-no-such-group --no-user-group --no-create-home --home-dir \/var\/empty --shell \/usr\/sbin\/nologin nixfarm-no-such-group\$i/,
    );
    assert.match(failure.fix ?? '', /\nor build without build users: `build-users-group =` in nix\.conf$/);

    const empty = classifyNixBuildFailure(SEEN.emptyGroup!.status, SEEN.emptyGroup!.message);
    assert.equal(empty.code, 'nix-build-users-missing');
    assert.doesNotMatch(empty.fix ?? '', /groupadd/, 'the group exists: only its members are missing');
    assert.match(empty.fix ?? '', /useradd .*nogroup\$i/);
  });

  it('calls a platform or features the machine cannot build its setup, naming the settings that would let it', () => {
    const failure = classifyNixBuildFailure(SEEN.platform!.status, SEEN.platform!.message);
    assert.equal(failure.kind, 'machine');
    assert.equal(failure.code, 'nix-platform-mismatch');
    assert.equal(
      failure.fix,
      "make this Nix build it: extra-platforms = x86_64-darwin in nix.conf (or --nix-option)\nor stop sending it such builds (a worker's --system and --features say what it takes)",
    );
    const features = classifyNixBuildFailure(SEEN.features!.status, SEEN.features!.message);
    assert.equal(features.code, 'nix-platform-mismatch');
    assert.match(
      features.fix ?? '',
      /^make this Nix build it: extra-system-features = kvm-nope in nix\.conf \(or --nix-option\)\n/,
      'its own platform: only the missing feature',
    );
  });

  it("calls the sandbox that cannot be set up the machine's setup", () => {
    for (const said of [
      'error: cannot perform a sandboxed build because user namespaces are not enabled; check /proc/sys/user/max_user_namespaces',
      'error: unable to start build process',
      'error: creating sandboxed builder process using clone(), without sandbox-fallback: Operation not permitted',
    ]) {
      const failure = classifyNixBuildFailure('MiscFailure', said);
      assert.deepEqual([failure.kind, failure.code], ['machine', 'nix-sandbox-unavailable'], said);
      assert.match(failure.fix ?? '', /sandbox = false/);
    }
  });

  it("calls builder failures and refused outputs the derivation's own, by Nix's status or its words", () => {
    const cases: Array<[keyof typeof SEEN, string]> = [
      ['builderFailed', 'nix-builder-failed'],
      ['noOutput', 'nix-output-missing'],
      ['badReference', 'nix-output-references-refused'],
      ['noChroot', 'nix-sandbox-refused'],
    ];
    for (const [name, code] of cases) {
      const failure = classifyNixBuildFailure(SEEN[name]!.status, SEEN[name]!.message);
      assert.deepEqual([failure.kind, failure.code], ['derivation', code], name);
      assert.doesNotMatch(failure.message, /\x1b/, 'no terminal codes');
    }
    assert.deepEqual(classifyNixBuildFailure('NotDeterministic', 'whatever Nix says').kind, 'derivation');
  });

  it('leaves everything else passing (retried), as before', () => {
    const sandboxPath = classifyNixBuildFailure(SEEN.sandboxPath!.status, SEEN.sandboxPath!.message);
    assert.deepEqual([sandboxPath.kind, sandboxPath.code], ['transient', 'nix-build-not-done']);
    for (const status of ['TransientFailure', 'MiscFailure', 'DependencyFailed', 'Unknown'] as const) {
      assert.equal(classifyNixBuildFailure(status, 'error: some path is gone').kind, 'transient', status);
    }
    assert.equal(classifyNixBuildFailure('MiscFailure', '').message, 'Nix ended the build with MiscFailure and no message');
  });

  it('strips colours and cursor codes only', () => {
    assert.equal(stripTerminalCodes('\x1b[31;1merror:\x1b[0m plain [text] \x1b[K'), 'error: plain [text] ');
  });
});

describe('NixSetupError', () => {
  const error = new NixSetupError({
    nix: "worker w1's Nix",
    code: 'nix-build-users-missing',
    nixMessage: "error: the group 'nixbld' specified in 'build-users-group' does not exist",
    fix: 'create them:\n  groupadd --system nixbld\nor build without build users',
    context: 'checked at start with a trivial build',
  });

  it('names the Nix, quotes Nix and gives the fix, one way out per line; never retryable', () => {
    assert.equal(
      error.message,
      "worker w1's Nix cannot build (checked at start with a trivial build): error: the group 'nixbld' specified in 'build-users-group' does not exist\n" +
        '  fix: create them:\n         groupadd --system nixbld\n       or build without build users',
    );
    assert.equal(error.code, 'nix-build-users-missing');
    assert.equal(error.retryable, false);
  });

  it('fits on one line for a heartbeat or a hand-back, cut to the limit', () => {
    assert.equal(
      error.oneLine(),
      "worker w1's Nix cannot build: error: the group 'nixbld' specified in 'build-users-group' does not exist (fix: create them: groupadd --system nixbld or build without build users)",
    );
    assert.equal(error.oneLine(40).length, 40);
    assert.ok(error.oneLine(40).endsWith('…'));
  });
});

describe('finished reports: errorCode and retryable', () => {
  const report = {
    type: 'finished',
    drvPath: DRV,
    worker: 'w1',
    jobId: 'j',
    attempt: 0,
    outcome: 'aborted',
    logTail: [],
    timings: { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 },
    at: 1,
  };

  it('keeps reports of older workers (without either) valid, and carries both when given', () => {
    assert.equal(buildFinishedEventSchema.safeParse(report).success, true);
    const parsed = buildFinishedEventSchema.parse({ ...report, errorCode: 'nix-build-users-missing', retryable: false });
    assert.equal(parsed.errorCode, 'nix-build-users-missing');
    assert.equal(parsed.retryable, false);
    assert.equal(buildFinishedEventSchema.safeParse({ ...report, retryable: 'no' }).success, false);
    assert.equal(buildFinishedEventSchema.safeParse({ ...report, errorCode: '' }).success, false);
  });
});
