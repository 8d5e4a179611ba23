import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalNarHash } from '@nixfarm/coordinator';

describe('NAR hash forms', () => {
  it("turns a hex SHA-256 into Nix's base-32 (as nix-hash --to-base32 prints it)", () => {
    // nix-hash --type sha256 --to-base32 5891b5b5…03 (the hash of "hello\n")
    assert.equal(
      canonicalNarHash('sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03'),
      'sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq',
    );
  });

  it('leaves a base-32 hash and anything else as it is', () => {
    assert.equal(
      canonicalNarHash('sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq'),
      'sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq',
    );
    assert.equal(canonicalNarHash('md5:abc'), 'md5:abc');
  });
});
