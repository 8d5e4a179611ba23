import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { hashOfQueuedJobId, localJobId, queuedJobId } from '@nixfarm/shared';

const HASH = '0123456789abcdfghijklmnpqrsvwxyz';

describe('build job ids', () => {
  it('is the hash for a first attempt and <hash>.<n> for a retry', () => {
    assert.equal(queuedJobId(HASH, 0), HASH);
    assert.equal(queuedJobId(HASH, 3), `${HASH}.3`);
  });

  it('reads the hash back from either form', () => {
    assert.equal(hashOfQueuedJobId(queuedJobId(HASH, 0)), HASH);
    assert.equal(hashOfQueuedJobId(queuedJobId(HASH, 2)), HASH);
  });

  it("names a build on the coordinator's own store local-<hash>", () => {
    assert.equal(localJobId(HASH), `local-${HASH}`);
  });
});
