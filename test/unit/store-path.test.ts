import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  assertDerivationPath,
  assertStorePath,
  derivationName,
  hashPart,
  InvalidStorePathError,
  isDerivationPath,
  isHashPrefix,
  isStorePath,
  parseStorePath,
  storePathProblem,
} from '@nixfarm/shared';

const HASH = '0c0ymkk6hv1dbfz5fk7x8b0c7c3l0zvm';
const valid = (name: string) => `/nix/store/${HASH}-${name}`;

describe('store-path grammar', () => {
  it('accepts real store paths', () => {
    for (const p of [
      valid('hello-2.12'),
      valid('hello-2.12.drv'),
      valid('a'),
      valid('python3.11-foo_bar+baz?x=1'),
      valid('source'),
      `/nix/store/${'z'.repeat(32)}-${'n'.repeat(211)}`,
    ]) {
      assert.equal(storePathProblem(p), undefined, p);
      assert.equal(assertStorePath(p), p);
    }
  });

  it('splits hash and name', () => {
    assert.deepEqual(parseStorePath(valid('hello-2.12')), { path: valid('hello-2.12'), hash: HASH, name: 'hello-2.12' });
    assert.equal(hashPart(valid('x.drv')), HASH);
    assert.equal(derivationName(valid('hello-2.12.drv')), 'hello-2.12');
  });

  it('rejects shell metacharacters, traversal, whitespace and control characters', () => {
    for (const name of ['a;rm -rf', 'a$(id)', '$(id)', '`id`', 'a b', 'a\nb', 'a\tb', 'a|b', 'a&b', "a'b", 'a"b', 'a*', 'a\\b', 'a\0b']) {
      assert.equal(isStorePath(valid(name)), false, JSON.stringify(name));
    }
    for (const p of [`/nix/store/${HASH}-a/../../etc/passwd`, `/nix/store/../store/${HASH}-a`, '/nix/store/..', `/nix/store/${HASH}-..`]) {
      assert.equal(isStorePath(p), false, p);
    }
  });

  it('rejects hashes outside Nix base-32 (no e, o, t, u) and of the wrong length', () => {
    for (const bad of ['e', 'o', 't', 'u', 'A', '-', '_']) {
      const hash = bad + HASH.slice(1);
      assert.equal(isStorePath(`/nix/store/${hash}-hello`), false, hash);
    }
    assert.equal(isStorePath(`/nix/store/${HASH.slice(1)}-hello`), false, '31 characters');
    assert.equal(isStorePath(`/nix/store/${HASH}0-hello`), false, '33 characters');
  });

  it('rejects names starting with a dot, empty names and over-long names', () => {
    assert.equal(isStorePath(valid('.hidden')), false);
    assert.equal(isStorePath(valid('.')), false);
    assert.equal(isStorePath(`/nix/store/${HASH}-`), false);
    assert.equal(isStorePath(`/nix/store/${HASH}`), false);
    assert.equal(isStorePath(valid('n'.repeat(212))), false);
  });

  it('rejects other store dirs, relative paths and extra slashes', () => {
    for (const p of [
      `nix/store/${HASH}-a`,
      `/nix/store//${HASH}-a`,
      `//nix/store/${HASH}-a`,
      `/nix/store/${HASH}-a/`,
      `/nix/store/${HASH}-a/bin/sh`,
      `/gnu/store/${HASH}-a`,
      `/nix/var/${HASH}-a`,
      '',
      '/nix/store/',
    ]) {
      assert.equal(isStorePath(p), false, p);
    }
  });

  it('throws InvalidStorePathError naming the path and the reason', () => {
    assert.throws(
      () => assertStorePath('/nix/store/x;y'),
      (err: unknown) =>
        err instanceof InvalidStorePathError && err.path === '/nix/store/x;y' && err.code === 'invalid-store-path' && !err.retryable && /x;y/.test(err.message),
    );
  });

  it('derivation paths end in .drv', () => {
    assert.equal(isDerivationPath(valid('a.drv')), true);
    assert.equal(isDerivationPath(valid('a')), false);
    assert.throws(() => assertDerivationPath(valid('a')), InvalidStorePathError);
    assert.equal(assertDerivationPath(valid('a.drv')), valid('a.drv'));
  });

  it('recognises abbreviated hashes', () => {
    assert.equal(isHashPrefix('0c0ymk'), true);
    assert.equal(isHashPrefix(HASH), true);
    assert.equal(isHashPrefix(''), false);
    assert.equal(isHashPrefix(`${HASH}0`), false);
    assert.equal(isHashPrefix('0c0e'), false);
  });
});
