import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkFeatureName, checkSystemName, parseQueueName, queueNameFor, ValidationError } from '@nixfarm/shared';

describe('queue names', () => {
  it('round-trips system and features', () => {
    for (const req of [
      { system: 'x86_64-linux', requiredFeatures: [] },
      { system: 'aarch64-darwin', requiredFeatures: ['big-parallel'] },
      { system: 'x86_64-linux', requiredFeatures: ['benchmark', 'kvm', 'nixos-test'] },
      { system: 'builtin', requiredFeatures: [] },
    ]) {
      const name = queueNameFor(req);
      assert.deepEqual(parseQueueName(name), req, name);
    }
  });

  it('is independent of feature order and duplicates', () => {
    const a = queueNameFor({ system: 'x86_64-linux', requiredFeatures: ['kvm', 'big-parallel'] });
    const b = queueNameFor({ system: 'x86_64-linux', requiredFeatures: ['big-parallel', 'kvm', 'kvm'] });
    assert.equal(a, b);
    assert.deepEqual(parseQueueName(a).requiredFeatures, ['big-parallel', 'kvm']);
  });

  it('separates platforms and feature sets', () => {
    const names = new Set([
      queueNameFor({ system: 'x86_64-linux', requiredFeatures: [] }),
      queueNameFor({ system: 'x86_64-darwin', requiredFeatures: [] }),
      queueNameFor({ system: 'x86_64-linux', requiredFeatures: ['kvm'] }),
      queueNameFor({ system: 'x86_64-linux', requiredFeatures: ['kvm', 'big-parallel'] }),
    ]);
    assert.equal(names.size, 4);
  });

  it('never contains a colon (BullMQ forbids it)', () => {
    assert.ok(!queueNameFor({ system: 'x86_64-linux', requiredFeatures: ['a', 'b'] }).includes(':'));
  });

  it("rejects ':' and '@' (and other separators) in systems and features", () => {
    for (const bad of ['x86_64:linux', 'x86@linux', 'a,b', 'a b', '', '.hidden', 'a/b']) {
      assert.throws(() => queueNameFor({ system: bad, requiredFeatures: [] }), ValidationError, `system ${JSON.stringify(bad)}`);
      assert.throws(() => queueNameFor({ system: 'x86_64-linux', requiredFeatures: [bad] }), ValidationError, `feature ${JSON.stringify(bad)}`);
    }
    assert.throws(() => checkSystemName('a:b'), ValidationError);
    assert.throws(() => checkFeatureName('a@b'), ValidationError);
  });

  it('rejects names that are not build queues', () => {
    for (const bad of [
      '',
      'build',
      'build@',
      'x86_64-linux',
      'queue@x86_64-linux',
      'build@x86_64-linux@kvm@extra',
      'build@x:y',
      'build@x86_64-linux@k:v',
      'build@x86_64-linux@kvm,,a',
    ]) {
      assert.throws(() => parseQueueName(bad), ValidationError, JSON.stringify(bad));
    }
  });
});
