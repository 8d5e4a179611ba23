import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFileExclusive, writeFileAtomic } from '@nixfarm/shared';

function scratch(): string {
  return mkdtempSync(join(tmpdir(), 'nixfarm-atomic-'));
}

describe('atomic files', () => {
  it('replaces a file whole, with the mode asked for, and leaves no temporary file', async () => {
    const dir = scratch();
    try {
      const file = join(dir, 'f');
      await writeFileAtomic(file, 'one', 0o600);
      await writeFileAtomic(file, 'two', 0o600);
      assert.equal(readFileSync(file, 'utf8'), 'two');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(readdirSync(dir), ['f']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('creates a file once: of writers racing, one wins and the others leave it as it is', async () => {
    const dir = scratch();
    try {
      const file = join(dir, 'f');
      const created = await Promise.all(['a', 'b', 'c'].map((text) => createFileExclusive(file, text)));
      assert.equal(created.filter(Boolean).length, 1);
      assert.equal(readFileSync(file, 'utf8'), ['a', 'b', 'c'][created.indexOf(true)]);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(readdirSync(dir), ['f']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
