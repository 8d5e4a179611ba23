import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { spawnNixfarm, type CommandResult } from '../harness/test-farm.js';
import { startPrivateRedis, type PrivateRedis } from '../harness/private-redis.js';
import { removeTreeSync } from '../harness/process-cleanup.js';

/**
 * A signing key the coordinator cannot use stops its start before Redis is
 * touched: exit 2 and one message naming the file and what to do. A real
 * Redis listens, so a start that went on would write to it.
 */
describe('bad signing keys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-signing-key-'));
  let redis: PrivateRedis;
  let client: Redis;
  before(async () => {
    redis = await startPrivateRedis();
    client = new Redis(redis.url);
  });
  after(async () => {
    client.disconnect();
    await redis.stop();
    removeTreeSync(dir);
  });

  let n = 0;
  /** A fresh state dir, and the coordinator's command on it (ports picked by the kernel). */
  function coordinator(extra: readonly string[] = []): { stateDir: string; args: string[] } {
    const stateDir = join(dir, `state-${++n}`);
    mkdirSync(stateDir, { mode: 0o700 });
    return {
      stateDir,
      args: ['coordinator', '--state-dir', stateDir, '--redis', redis.url, '--http-port', '0', '--ssh-port', '0', '--no-local-builds', ...extra],
    };
  }

  function run(args: readonly string[]): Promise<CommandResult> {
    return spawnNixfarm(args, { timeoutMs: 30_000, env: { ...process.env, NIX_CONFIG: 'substituters =' } }).result;
  }

  const pair = (name: string) => {
    const sk = join(dir, `${name}.sk`);
    const pk = join(dir, `${name}.pk`);
    execFileSync('nix-store', ['--generate-binary-cache-key', name, sk, pk]);
    chmodSync(sk, 0o600);
    return { sk, pk };
  };

  const cases: Array<{ what: string; setUp: () => { args: string[]; file: string }; message: RegExp }> = [
    {
      what: '--signing-key that does not exist',
      setUp: () => {
        const file = join(dir, 'missing.sk');
        return { args: coordinator(['--signing-key', file]).args, file };
      },
      message: /does not exist; make one with `nix-store --generate-binary-cache-key NAME SECRET-FILE PUBLIC-FILE`/,
    },
    {
      what: 'a key file others can read',
      setUp: () => {
        const { sk } = pair('loose-1');
        chmodSync(sk, 0o644);
        return { args: coordinator(['--signing-key', sk]).args, file: sk };
      },
      message: /its mode is 644, so group or others can read or write it; chmod 600 /,
    },
    {
      what: 'the state dir key made readable by group',
      setUp: () => {
        const { stateDir, args } = coordinator();
        const file = join(stateDir, 'signing-key');
        writeFileSync(file, readFileSync(pair('group-1').sk), { mode: 0o640 });
        return { args, file };
      },
      message: /its mode is 640, so group or others can read or write it; chmod 600 /,
    },
    {
      what: 'the public key given as --signing-key',
      setUp: () => {
        const { pk } = pair('public-1');
        chmodSync(pk, 0o600);
        return { args: coordinator(['--signing-key', pk]).args, file: pk };
      },
      message: /it is not a Nix secret key .*give the secret key file, not the public one/,
    },
    {
      what: 'a secret key whose halves do not belong together',
      setUp: () => {
        const text = readFileSync(pair('edited-1').sk, 'utf8').trim();
        const [name, b64] = text.split(':') as [string, string];
        const bytes = Buffer.from(b64, 'base64');
        bytes[40] = bytes[40]! ^ 0xff;
        const file = join(dir, 'edited.sk');
        writeFileSync(file, `${name}:${bytes.toString('base64')}`, { mode: 0o600 });
        return { args: coordinator(['--signing-key', file]).args, file };
      },
      message: /its public half does not belong to its secret half/,
    },
  ];

  for (const c of cases) {
    it(`${c.what}: exit 2, one message naming the file and the fix, Redis untouched`, async () => {
      const { args, file } = c.setUp();
      const result = await run(args);
      assert.equal(result.exitCode, 2, `exit ${result.exitCode}\n${result.stderr}`);
      assert.match(result.stderr, new RegExp(`^nixfarm: cannot use the signing key ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: `));
      assert.match(result.stderr, c.message);
      assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(await client.dbsize(), 0, 'nothing written to Redis');
      // cache-key reads the same file and refuses it alike.
      const key = await run(['cache-key', '--signing-key', file]);
      assert.equal(key.exitCode, 2, key.stderr);
      assert.match(key.stderr, c.message);
      assert.equal(key.stdout, '');
    });
  }

  it('an operator key (nix-store --generate-binary-cache-key) is used as given: cache-key prints its public file', async () => {
    const { sk, pk } = pair('operator-1');
    const key = await run(['cache-key', '--signing-key', sk]);
    assert.equal(key.exitCode, 0, key.stderr);
    assert.equal(key.stdout.trim(), readFileSync(pk, 'utf8').trim());
  });

  it('cache-key before the coordinator ever started says where the key will be', async () => {
    const { stateDir } = coordinator();
    const key = await run(['cache-key', '--state-dir', stateDir]);
    assert.equal(key.exitCode, 2);
    assert.match(key.stderr, /signing-key does not exist: the coordinator makes its signing key at its first start/);
  });
});
