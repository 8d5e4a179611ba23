import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DerivationView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { SimulatedMachine } from '../harness/simulated-machine.js';
import { freshSalt, nixInstantiate, outputPathsOf, scriptedFixture } from '../harness/nix-fixtures.js';
import { onProcessExit, removeTreeSync } from '../harness/process-cleanup.js';

const NIX_COMMAND = ['--extra-experimental-features', 'nix-command'];

/**
 * Two worker builds (b refers to a), one preferLocalBuild derivation the
 * coordinator builds itself, and a top that refers to both: the outputs'
 * references are all farm outputs, so a laptop can take the whole closure
 * from the farm's cache.
 */
const FIXTURE = scriptedFixture(
  'binary-cache',
  `  top = mk "cache-top" "echo \${b} \${local} > $out";
`,
  `  a = mk "cache-a" "echo a-\${salt} > $out";
  b = mk "cache-b" "echo \${a} > $out";
  local = derivation { name = "cache-local"; system = builtins.currentSystem; builder = "\${bb}/bin/sh"; args = [ "-c" "echo local-\${salt} > $out" ]; preferLocalBuild = true; };
`,
);

function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-cache-test-'));
  onProcessExit(() => removeTreeSync(dir));
  return dir;
}

/** A key pair the farm does not hold: its public half must not vouch for the farm's outputs. */
function otherKey(dir: string): string {
  execFileSync('nix-store', ['--generate-binary-cache-key', 'not-the-farm-1', join(dir, 'other.sk'), join(dir, 'other.pk')]);
  return readFileSync(join(dir, 'other.pk'), 'utf8').trim();
}

/** `nix store verify --sigs-needed 1` on the host store with these trusted keys: its exit code and output. */
function verify(trusted: string, paths: readonly string[]): { status: number; output: string } {
  try {
    const output = execFileSync('nix', [...NIX_COMMAND, 'store', 'verify', '--no-contents', '--trusted-public-keys', trusted, '--sigs-needed', '1', ...paths], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { status: 0, output };
  } catch (error) {
    const e = error as { status: number; stderr: string };
    return { status: e.status, output: e.stderr };
  }
}

/** A machine with its own empty store that uses only `substituter`, with signatures required. */
function laptop(name: string, substituter: string, trustedKey: string, netrc?: string): SimulatedMachine {
  return new SimulatedMachine(name, {
    nixConfig: [
      'build-users-group =',
      `substituters = ${substituter}`,
      `trusted-public-keys = ${trustedKey}`,
      'require-sigs = true',
      // One try: a refused path fails at once rather than after Nix's download retries.
      'download-attempts = 1',
      'connect-timeout = 5',
      ...(netrc === undefined ? [] : [`netrc-file = ${netrc}`]),
    ],
  });
}

function netrcFile(dir: string, cacheUrl: string, token: string): string {
  const file = join(dir, `netrc-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, `machine ${new URL(cacheUrl).hostname} login nixfarm password ${token}\n`, { mode: 0o600 });
  return file;
}

/**
 * A cache in front of the farm's that serves every narinfo with its NarHash
 * swapped for another output's: the signature no longer matches the content.
 */
async function tamperingCache(upstream: string, token: string, swapNarHash: string): Promise<Server & { url: string }> {
  const server = createServer((request, response) => {
    void (async () => {
      const answer = await fetch(`${upstream}${request.url!.replace(/^\/cache/, '')}`, { headers: { authorization: `Bearer ${token}` } });
      let body: Buffer | string = Buffer.from(await answer.arrayBuffer());
      if (request.url!.endsWith('.narinfo') && answer.ok) body = body.toString('utf8').replace(/^NarHash: .*$/m, `NarHash: ${swapNarHash}`);
      response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/octet-stream' });
      response.end(body);
    })().catch(() => response.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return Object.assign(server, { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/cache` });
}

describe('signed outputs and the binary cache the coordinator serves', () => {
  const farm = farmForSuite({ workers: [{ name: 'alpha', maxJobs: 2 }] });
  const dir = scratchDir();
  let outputs: string[] = [];
  let topDrvOnHost = '';
  const salt = freshSalt();

  it('signs every output of a run, built on a worker or on the coordinator: nix store verify passes with the farm key, fails with another', async () => {
    const result = await farm.build([FIXTURE, '-A', 'top', '--argstr', 'salt', salt]);
    assert.equal(result.exitCode, 0, `build failed:\n${result.stderr}\n${farm.diagnostics()}`);
    const runId = /run (\w+)/.exec(result.stderr)?.[1];
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
    assert.equal(derivations.length, 4);
    assert.deepEqual(derivations.map((d) => d.worker).sort(), ['alpha', 'alpha', 'alpha', 'coordinator'], 'three worker builds and one local');
    outputs = (await Promise.all(derivations.map((d) => outputPathsOf(d.drvPath)))).flat();
    topDrvOnHost = (await nixInstantiate(FIXTURE, ['top'], { salt }))[0]!;

    const key = await farm.cli(['cache-key', '--state-dir', farm.coordinatorStateDir]);
    assert.equal(key.exitCode, 0, key.stderr);
    assert.match(key.stdout.trim(), /^[^:\s]+-nixfarm-1:[A-Za-z0-9+/]{43}=$/);
    assert.equal(key.stdout.trim(), farm.address.cacheKey);
    const good = verify(key.stdout.trim(), outputs);
    assert.equal(good.status, 0, good.output);
    const bad = verify(otherKey(dir), outputs);
    assert.notEqual(bad.status, 0, 'a key the farm does not hold vouches for nothing');
    assert.match(bad.output, /untrusted/);
  });

  it('a machine with an empty store substitutes every output from the cache with the farm key and the read token, building nothing', async () => {
    const netrc = netrcFile(dir, farm.address.cacheUrl, farm.apiToken('read'));
    const machine = laptop('laptop', farm.address.cacheUrl, farm.address.cacheKey, netrc);
    try {
      const [drv] = await nixInstantiate(FIXTURE, ['top'], { salt, machine, options: [['substituters', farm.address.cacheUrl]] });
      assert.equal(drv, topDrvOnHost, 'the same derivation as the farm built');
      const realised = await machine.run('nix-store', ['-r', drv!, '--option', 'substituters', farm.address.cacheUrl]);
      assert.equal(realised.exitCode, 0, realised.stderr);
      assert.match(realised.stderr, /these 4 paths will be fetched/);
      assert.doesNotMatch(realised.stderr, /will be built|building '/);
      assert.deepEqual([...(await machine.isValid(outputs))].sort(), [...outputs].sort(), 'every output of the run is in the laptop store');
      // The NAR is what the store holds: the laptop's copy has the coordinator's NAR hash.
      const [out] = await outputPathsOf(drv!);
      assert.equal(readFileSync(machine.hostPathOf(out!), 'utf8').trim(), readFileSync(out!, 'utf8').trim());
    } finally {
      await machine.destroy();
    }
  });

  it('a key the laptop does not trust, a tampered narinfo, or no token: Nix refuses and the laptop store stays empty', async () => {
    const other = otherKey(dir);
    const target = outputs[0]!;
    const netrc = netrcFile(dir, farm.address.cacheUrl, farm.apiToken('read'));

    const untrusting = laptop('untrusting', farm.address.cacheUrl, other, netrc);
    const tamper = await tamperingCache(farm.address.cacheUrl, farm.apiToken('read'), (await farmNarHash(outputs[1]!)).narHash);
    const fooled = laptop('fooled', tamper.url, farm.address.cacheKey);
    const anonymous = laptop('anonymous', farm.address.cacheUrl, farm.address.cacheKey);
    try {
      for (const [machine, why] of [
        [untrusting, /is not signed by any of the keys in 'trusted-public-keys'/],
        [fooled, /is not signed by any of the keys in 'trusted-public-keys'/],
        // Its first request, nix-cache-info, is refused (401): Nix drops the substituter.
        [anonymous, /does not appear to be a binary cache|HTTP error 401/],
      ] as const) {
        const result = await machine.run('nix-store', ['-r', target]);
        assert.notEqual(result.exitCode, 0, `${machine.name} must not get ${target}:\n${result.stderr}`);
        assert.match(result.stderr, why, machine.name);
        assert.equal((await machine.isValid([target])).size, 0, `${machine.name} has nothing`);
      }
    } finally {
      tamper.close();
      for (const m of [untrusting, fooled, anonymous]) await m.destroy();
    }

    const hash = target.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    const noToken = await fetch(`${farm.address.cacheUrl}/${hash}.narinfo`);
    assert.equal(noToken.status, 401);
    assert.match(noToken.headers.get('www-authenticate') ?? '', /^Basic /);
    const basic = `Basic ${Buffer.from(`anyone:${farm.apiToken('read')}`).toString('base64')}`;
    const withToken = await fetch(`${farm.address.cacheUrl}/${hash}.narinfo`, { headers: { authorization: basic } });
    assert.equal(withToken.status, 200);
    assert.match(await withToken.text(), new RegExp(`^StorePath: ${target}$[\\s\\S]*^Sig: ${farm.address.cacheKey.split(':')[0]}:`, 'm'));
    // Unknown hash, not a hash, a .drv the coordinator holds but did not build: 404.
    for (const file of ['0'.repeat(32), 'not-a-hash', topDrvOnHost.slice('/nix/store/'.length, '/nix/store/'.length + 32)]) {
      const response = await fetch(`${farm.address.cacheUrl}/${file}.narinfo`, { headers: { authorization: basic } });
      assert.equal(response.status, 404, file);
    }
  });

  it('with --public-cache a machine without a token substitutes too; a restart keeps the key', async () => {
    const keyBefore = farm.address.cacheKey;
    await farm.killCoordinator();
    await farm.startCoordinator({ http: Number(new URL(farm.address.httpUrl).port), ssh: farm.address.sshPort }, { extraArgs: ['--public-cache'] });
    assert.equal(farm.address.cacheKey, keyBefore, 'the key made at first start is kept');
    const machine = laptop('public', farm.address.cacheUrl, farm.address.cacheKey);
    try {
      const result = await machine.run('nix-store', ['-r', outputs[0]!]);
      assert.equal(result.exitCode, 0, result.stderr);
      assert.equal((await machine.isValid([outputs[0]!])).size, 1);
    } finally {
      await machine.destroy();
    }
  });

  /** The farm's narinfo of a path, parsed. */
  async function farmNarHash(path: string): Promise<{ narHash: string }> {
    const hash = path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    const text = await (await fetch(`${farm.address.cacheUrl}/${hash}.narinfo`, { headers: farm.authHeaders('read') })).text();
    return { narHash: /^NarHash: (.*)$/m.exec(text)![1]! };
  }
});
