import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ApiTokens, scopeAllows, scopeNeeded } from '@nixfarm/coordinator';
import { ApiTokenFileError, readApiTokenFile } from '@nixfarm/shared';

describe('API tokens', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-api-tokens-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('creates one 0600 token per scope on first load and keeps them after', async () => {
    const stateDir = join(dir, 'fresh');
    const first = await ApiTokens.loadOrCreate(stateDir);
    const admin = readFileSync(first.files.admin, 'utf8').trim();
    const read = readFileSync(first.files.read, 'utf8').trim();
    assert.equal(statSync(first.files.admin).mode & 0o777, 0o600);
    assert.equal(statSync(first.files.read).mode & 0o777, 0o600);
    const again = await ApiTokens.loadOrCreate(stateDir);
    assert.equal(readFileSync(again.files.admin, 'utf8').trim(), admin);
    assert.equal(again.tokens.scopeOf(admin), 'admin');
    assert.equal(again.tokens.scopeOf(read), 'read');
    assert.equal(again.tokens.scopeOf(`${admin}x`), undefined);
    assert.equal(again.tokens.scopeOf(''), undefined);
  });

  it('refuses a token file group or others can read or write, and a malformed one', async () => {
    const file = join(dir, 'loose');
    writeFileSync(file, 'nixfarm_read_abcdefghijklmnopqrstuvwxyz\n');
    chmodSync(file, 0o640);
    await assert.rejects(readApiTokenFile(file), (error: unknown) => error instanceof ApiTokenFileError && /mode is 640.*chmod 600/.test(error.message));
    chmodSync(file, 0o600);
    assert.equal(await readApiTokenFile(file), 'nixfarm_read_abcdefghijklmnopqrstuvwxyz');
    writeFileSync(file, 'two words\n');
    await assert.rejects(readApiTokenFile(file), /does not hold one token/);
    assert.equal(await readApiTokenFile(join(dir, 'absent')), undefined);
  });

  it('admin implies read; only submit and cancel need admin; health is open', () => {
    assert.ok(scopeAllows('admin', 'read') && scopeAllows('admin', 'admin') && scopeAllows('read', 'read'));
    assert.ok(!scopeAllows('read', 'admin'));
    assert.equal(scopeNeeded('GET', '/api/health'), undefined);
    assert.equal(scopeNeeded('POST', '/api/runs'), 'admin');
    assert.equal(scopeNeeded('POST', '/api/runs/:id/cancel'), 'admin');
    assert.equal(scopeNeeded('GET', '/api/runs'), 'read');
    assert.equal(scopeNeeded('GET', '/metrics'), 'read');
    assert.equal(scopeNeeded('GET', undefined), 'read');
  });
});
