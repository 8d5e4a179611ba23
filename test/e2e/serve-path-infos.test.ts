import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { ServeSession } from '@nixfarm/shared';
import { canonicalNarHash } from '@nixfarm/coordinator';
import { chain, freshSalt, nixInstantiate } from '../harness/nix-fixtures.js';

const NIX_OPTIONS = ['--option', 'sandbox', 'true', '--option', 'substituters', ''];

function query(flag: string, path: string): string {
  return execFileSync('nix-store', ['--query', flag, path], { encoding: 'utf8' }).trim();
}

/**
 * QueryPathInfos over a real read-only `nix-store --serve` session against
 * what `nix-store --query` prints for the same paths: the NAR hash a worker
 * reports and the coordinator compares must be exactly Nix's.
 */
describe('serve sessions: path infos', () => {
  let session: ServeSession;
  let top: string;
  let bottom: string;
  let drvOfTop: string;

  before(async () => {
    const fixture = chain(2);
    const [drvPath] = await nixInstantiate(fixture.file, fixture.attrs, { salt: freshSalt() });
    drvOfTop = drvPath!;
    top = execFileSync('nix-store', ['--realise', drvOfTop, ...NIX_OPTIONS], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    bottom = query('--references', top)
      .split('\n')
      .find((p) => p.endsWith('-link-0'))!;
    session = await ServeSession.start({ command: 'nix-store', args: ['--serve', ...NIX_OPTIONS], peer: 'the host store' });
  });

  after(async () => {
    await session?.close();
  });

  it("returns Nix's NAR hash, size, references and deriver of each valid path, and leaves invalid ones out", async () => {
    assert.ok((session.connection.serverVersion & 0xff) >= 4, `server minor version ${session.connection.serverVersion & 0xff} sends NAR hashes`);
    const absent = `/nix/store/${'0'.repeat(32)}-never-built`;
    const infos = await session.connection.queryPathInfos([top, bottom, absent]);
    assert.deepEqual([...infos.keys()].sort(), [top, bottom].sort(), 'the invalid path is left out');
    for (const path of [top, bottom]) {
      const info = infos.get(path)!;
      assert.equal(info.narHash, query('--hash', path), `NAR hash of ${path}`);
      assert.equal(info.narSize, Number(query('--size', path)), `NAR size of ${path}`);
      assert.deepEqual(
        [...info.references].sort(),
        query('--references', path)
          .split('\n')
          .filter((l) => l.length > 0)
          .sort(),
        `references of ${path}`,
      );
      assert.equal(info.deriver, query('--deriver', path));
    }
    assert.equal(infos.get(top)!.deriver, drvOfTop);
    assert.match(infos.get(top)!.narHash!, /^sha256:[0-9a-df-np-sv-z]{52}$/);
    // the session stays usable after the exchange
    assert.deepEqual(await session.connection.queryValidPaths([top, absent]), new Set([top]));
  });

  it('agrees with nix-hash on the base-32 form of a hex NAR hash', () => {
    const hex = execFileSync('nix-store', ['--query', '--hash', top], { encoding: 'utf8' }).trim();
    const base16 = execFileSync('nix-hash', ['--type', 'sha256', '--to-base16', hex.replace(/^sha256:/, '')], { encoding: 'utf8' }).trim();
    assert.equal(canonicalNarHash(`sha256:${base16}`), hex);
    assert.equal(canonicalNarHash(hex), hex, 'a base-32 hash stays as it is');
  });
});
