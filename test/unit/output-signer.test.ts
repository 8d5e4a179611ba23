import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OutputSigner } from '@nixfarm/coordinator';
import { createLogger, redisKeys } from '@nixfarm/shared';

const A = '/nix/store/0c1pvmvzxkl0hv1x1d4w8iaq5bh9s00g-a';
const B = '/nix/store/1b3dkmcvhnfmz9bkyf0gvf7k2m1dsdwn-b';
const C = '/nix/store/2c4fmdcvhnfmz9bkyf0gvf7k2m1dsdwn-c';
const KEY = { name: 'test-1', secretKeyFile: '/state/signing-key', publicKey: 'test-1:AAAA' };

/** A signer on a fake `nix store sign` that finishes when the test says, and a fake Redis that records the HSETs. */
function bed(fail = false) {
  const calls: string[][] = [];
  const releases: Array<() => void> = [];
  const recorded: Record<string, string> = {};
  const nix = {
    signPaths: (keyFile: string, paths: readonly string[]) => {
      assert.equal(keyFile, KEY.secretKeyFile);
      calls.push([...paths]);
      return new Promise<void>((resolve, reject) => releases.push(() => (fail ? reject(new Error('nix store sign failed')) : resolve())));
    },
  };
  const redis = {
    hset: async (key: string, fields: Record<string, string>) => {
      assert.equal(key, redisKeys.signedPaths);
      Object.assign(recorded, fields);
      return Object.keys(fields).length;
    },
  };
  const signer = new OutputSigner({ nix, key: KEY, redis: redis as never, logger: createLogger({ name: 'signer-test', level: 'silent' }) });
  return { signer, calls, releases, recorded };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('OutputSigner', () => {
  it('signs one batch at a time; paths handed in meanwhile go together in the next; settled waits for all', async () => {
    const { signer, calls, releases, recorded } = bed();
    signer.sign([A]);
    signer.sign([B]);
    signer.sign([C, B]);
    await tick();
    assert.deepEqual(calls, [[A]], 'one process in flight');
    let settled = false;
    const done = signer.settled().then(() => (settled = true));
    releases.shift()!();
    await tick();
    assert.deepEqual(calls, [[A], [B, C]], 'the rest in one batch, each path once');
    assert.equal(settled, false, 'settled waits for the second batch');
    releases.shift()!();
    await done;
    assert.deepEqual(recorded, { '0c1pvmvzxkl0hv1x1d4w8iaq5bh9s00g': A, '1b3dkmcvhnfmz9bkyf0gvf7k2m1dsdwn': B, '2c4fmdcvhnfmz9bkyf0gvf7k2m1dsdwn': C });
  });

  it('a failed sign is logged, records nothing for the cache, and never rejects', async () => {
    const { signer, releases, recorded } = bed(true);
    signer.sign([A]);
    await tick();
    releases.shift()!();
    await signer.settled();
    assert.deepEqual(recorded, {});
  });

  it('nothing to sign: no process, settled at once', async () => {
    const { signer, calls } = bed();
    signer.sign([]);
    await signer.settled();
    assert.deepEqual(calls, []);
  });
});
