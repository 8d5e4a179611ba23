import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BUILTIN_SYSTEM, canBuild, describeIneligibility, ineligibilityReason, type WorkerCapabilities } from '@nixfarm/shared';

const linux: WorkerCapabilities = { systems: ['x86_64-linux', 'i686-linux'], supportedFeatures: ['big-parallel', 'kvm'], mandatoryFeatures: [] };
const benchmarker: WorkerCapabilities = { systems: ['x86_64-linux'], supportedFeatures: ['kvm'], mandatoryFeatures: ['benchmark'] };
const darwin: WorkerCapabilities = { systems: ['x86_64-darwin'], supportedFeatures: [], mandatoryFeatures: [] };

describe("eligibility (Nix's build-remote rule)", () => {
  it('needs the system to be one of the worker systems', () => {
    assert.equal(canBuild(linux, { system: 'x86_64-linux', requiredFeatures: [] }), true);
    assert.equal(canBuild(linux, { system: 'i686-linux', requiredFeatures: [] }), true);
    assert.equal(canBuild(linux, { system: 'x86_64-darwin', requiredFeatures: [] }), false);
    assert.equal(canBuild(darwin, { system: 'x86_64-darwin', requiredFeatures: [] }), true);
    assert.deepEqual(ineligibilityReason(linux, { system: 'aarch64-linux', requiredFeatures: [] }), {
      kind: 'wrong-system',
      system: 'aarch64-linux',
      workerSystems: linux.systems,
    });
  });

  it("lets every worker run 'builtin' derivations", () => {
    for (const w of [linux, darwin]) assert.equal(canBuild(w, { system: BUILTIN_SYSTEM, requiredFeatures: [] }), true);
    // the feature rules still apply to builtins
    assert.equal(canBuild(benchmarker, { system: BUILTIN_SYSTEM, requiredFeatures: [] }), false);
  });

  it('needs required ⊆ supported ∪ mandatory', () => {
    assert.equal(canBuild(linux, { system: 'x86_64-linux', requiredFeatures: ['kvm'] }), true);
    assert.equal(canBuild(linux, { system: 'x86_64-linux', requiredFeatures: ['kvm', 'big-parallel'] }), true);
    assert.deepEqual(ineligibilityReason(linux, { system: 'x86_64-linux', requiredFeatures: ['kvm', 'cuda', 'benchmark'] }), {
      kind: 'missing-features',
      missing: ['cuda', 'benchmark'],
    });
    // a mandatory feature counts as supported
    assert.equal(canBuild(benchmarker, { system: 'x86_64-linux', requiredFeatures: ['benchmark', 'kvm'] }), true);
  });

  it('needs mandatory ⊆ required', () => {
    assert.deepEqual(ineligibilityReason(benchmarker, { system: 'x86_64-linux', requiredFeatures: [] }), {
      kind: 'mandatory-features-not-required',
      unmet: ['benchmark'],
    });
    assert.equal(canBuild(benchmarker, { system: 'x86_64-linux', requiredFeatures: ['kvm'] }), false);
    assert.equal(canBuild(benchmarker, { system: 'x86_64-linux', requiredFeatures: ['benchmark'] }), true);
  });

  it('checks the system before features', () => {
    assert.equal(ineligibilityReason(benchmarker, { system: 'x86_64-darwin', requiredFeatures: ['cuda'] })?.kind, 'wrong-system');
  });

  it('explains a refusal in one line', () => {
    const reason = ineligibilityReason(linux, { system: 'x86_64-linux', requiredFeatures: ['cuda'] });
    assert.ok(reason);
    assert.match(describeIneligibility(reason), /missing feature: cuda/);
    const wrong = ineligibilityReason(darwin, { system: 'x86_64-linux', requiredFeatures: [] });
    assert.ok(wrong);
    assert.match(describeIneligibility(wrong), /needs x86_64-linux, worker has x86_64-darwin/);
  });
});
