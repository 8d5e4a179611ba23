import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { parseDerivation } from '@nixfarm/shared';
import { startPrivateRedis } from '../harness/private-redis.js';
import { SimulatedMachine } from '../harness/simulated-machine.js';
import {
  chain,
  derivationClosure,
  failingBranch,
  freshSalt,
  layeredDag,
  multiOutput,
  nixInstantiate,
  outputPathsOf,
  outputsOf,
  type Fixture,
} from '../harness/nix-fixtures.js';
import { sleep } from '../harness/poll.js';

/** Builds a fixture inside a machine the way tests should: sandboxed, no substituters. */
async function nixBuild(machine: SimulatedMachine, file: string, attrs: readonly string[], salt: string, extra: string[] = []) {
  return machine.run('nix-build', [
    file,
    ...attrs.flatMap((a) => ['-A', a]),
    '--argstr',
    'salt',
    salt,
    '--no-out-link',
    '--option',
    'sandbox',
    'true',
    ...extra,
  ]);
}

function hostValid(paths: readonly string[]): Set<string> {
  const result = spawnSync('nix-store', ['--check-validity', '--print-invalid', ...paths], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  const invalid = new Set(result.stdout.split('\n').filter(Boolean));
  return new Set(paths.filter((p) => !invalid.has(p)));
}

/** Alive and not a zombie. */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

async function instantiate(fixture: Fixture, salt: string): Promise<string[]> {
  const drvs = await nixInstantiate(fixture.file, fixture.attrs, { salt });
  const closure = await derivationClosure(drvs);
  assert.equal(closure.length, fixture.expectedDrvCount, `${fixture.file}: derivations in the closure of ${fixture.attrs.join(', ')}`);
  return drvs;
}

describe('simulated machines', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'nixfarm-harness-test-'));
  let m1: SimulatedMachine;
  let m2: SimulatedMachine;
  before(() => {
    m1 = new SimulatedMachine('m1');
    m2 = new SimulatedMachine('m2');
  });
  after(async () => {
    await m1.destroy();
    await m2.destroy();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('have separate stores: a path added in one is invalid in the other and on the host', async () => {
    const file = join(scratch, 'hello.txt');
    writeFileSync(file, `hello from m1 ${freshSalt()}\n`);
    const added = (await m1.runChecked('nix-store', ['--add', file])).trim();
    assert.match(added, /^\/nix\/store\/[0-9a-z]{32}-hello\.txt$/);
    assert.deepEqual(await m1.isValid([added]), new Set([added]));
    assert.deepEqual(await m2.isValid([added]), new Set());
    assert.deepEqual(hostValid([added]), new Set());
    assert.equal(readFileSync(m1.hostPathOf(added), 'utf8'), readFileSync(file, 'utf8'));
    assert.equal(existsSync(added), false, 'not in the host /nix/store');
    assert.equal(existsSync(m2.hostPathOf(added)), false);
  });

  it('give processes their own HOME and a NIX_CONFIG without substituters', async () => {
    const m3 = new SimulatedMachine('m3', { nixConfig: ['extra-platforms = x86_64-darwin'] });
    try {
      const env = await m3.runChecked('sh', ['-c', 'echo "$HOME"; echo "$XDG_CACHE_HOME"; echo "$NIX_CONFIG"'], { nixConfig: ['sandbox = true'] });
      assert.equal(env, `${m3.homeDir}\n${m3.homeDir}/.cache\nsubstituters =\nextra-platforms = x86_64-darwin\nsandbox = true\n`);
      const config = await m3.runChecked('nix', ['--extra-experimental-features', 'nix-command', 'show-config']);
      assert.match(config, /^substituters = $/m);
      assert.match(config, /^extra-platforms = .*x86_64-darwin/m);
    } finally {
      await m3.destroy();
    }
    assert.equal(existsSync(m3.dir), false, 'destroy removes the machine dir');
  });

  it('destroy kills every process of the machine, even ones that left its process group', async () => {
    const m4 = new SimulatedMachine('m4');
    const child = m4.spawn('sh', ['-c', 'setsid sleep 1000 & sleep 1000']);
    const started = Date.now();
    while (m4.processesInside().length < 3 && Date.now() - started < 5000) await sleep(20);
    const inside = m4.processesInside();
    assert.ok(inside.length >= 3, `expected sh and two sleeps inside, found ${inside.length}`);
    assert.ok(inside.includes(child.pid!), 'the spawned process itself is found through its mounts');
    await m4.destroy({ graceMs: 200 });
    // SIGKILL is delivered at once, but an orphan's exit is reaped by PID 1 when it gets to it
    const deadline = Date.now() + 3000;
    while (inside.some(isRunning) && Date.now() < deadline) await sleep(20);
    for (const pid of inside) assert.equal(isRunning(pid), false, `pid ${pid} survived destroy`);
    assert.equal(existsSync(m4.dir), false);
  });
});

describe('private redis', () => {
  it('answers on a private port, stops, and keeps append-only data across restart', async () => {
    const redis = await startPrivateRedis({ appendOnly: true });
    let client: Redis | undefined;
    try {
      assert.notEqual(redis.port, 6379);
      assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`);
      client = new Redis(redis.url, { maxRetriesPerRequest: null, lazyConnect: true });
      await client.connect();
      assert.equal(await client.ping(), 'PONG');
      await client.set('nixfarm:harness', 'durable');
      client.disconnect();

      await redis.restart();
      client = new Redis(redis.url, { maxRetriesPerRequest: null, lazyConnect: true });
      await client.connect();
      assert.equal(await client.get('nixfarm:harness'), 'durable', 'append-only data survives restart');
      client.disconnect();
      client = undefined;

      const pid = redis.pid!;
      await redis.stop();
      assert.equal(redis.pid, undefined);
      assert.equal(existsSync(`/proc/${pid}`), false, 'redis-server exited');
      assert.equal(await refused(redis.port), true, 'nothing listens after stop()');
    } finally {
      client?.disconnect();
      await redis.stop();
    }
  });

  it('starts several at once on different ports, without persistence by default', async () => {
    const [a, b] = await Promise.all([startPrivateRedis(), startPrivateRedis()]);
    try {
      assert.notEqual(a.port, b.port);
      const client = new Redis(a.url, { lazyConnect: true });
      await client.connect();
      assert.deepEqual(await client.config('GET', 'appendonly'), ['appendonly', 'no']);
      assert.deepEqual(await client.config('GET', 'save'), ['save', '']);
      client.disconnect();
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});

describe('nix fixtures, built for real inside a machine with the sandbox on', () => {
  let machine: SimulatedMachine;
  before(() => {
    machine = new SimulatedMachine('builder');
  });
  after(async () => {
    await machine.destroy();
  });

  it('layeredDag: 51 derivations, all built by `-A all`', async () => {
    const fixture = layeredDag({ layers: 5, width: 10 });
    assert.equal(fixture.expectedDrvCount, 51);
    const salt = freshSalt();
    const [all] = await instantiate(fixture, salt);
    const started = Date.now();
    const result = await nixBuild(machine, fixture.file, fixture.attrs, salt, ['-j', '2']);
    const ms = Date.now() - started;
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(result.stderr.match(/^building '/gm)?.length, 51, 'every derivation was built');
    const [out] = await outputPathsOf(all!);
    assert.equal(result.stdout.trim(), out);
    assert.deepEqual(await machine.isValid([out!]), new Set([out]));
    assert.deepEqual(hostValid([out!]), new Set(), 'built in the machine only');
    const lines = readFileSync(machine.hostPathOf(out!), 'utf8').trim().split('\n');
    assert.equal(lines.length, 11, 'all + one line per top-layer node');
    // the shape: every node of layer k>0 has 1-2 inputs from layer k-1, and inputs are shared (a DAG, not a tree)
    const dependents = new Map<string, number>();
    for (const path of await derivationClosure([all!])) {
      const drv = parseDerivation(path, readFileSync(path, 'utf8'));
      const layer = /^node-(\d+)-/.exec(drv.name)?.[1];
      const inputs = Object.keys(drv.inputDrvs).map((p) => parseDerivation(p, readFileSync(p, 'utf8')).name);
      if (layer !== undefined && layer !== '0') {
        assert.ok(inputs.length >= 1 && inputs.length <= 2, `${drv.name} has ${inputs.length} inputs`);
        for (const input of inputs) assert.ok(input.startsWith(`node-${Number(layer) - 1}-`), `${drv.name} depends on ${input}`);
      }
      for (const input of inputs) dependents.set(input, (dependents.get(input) ?? 0) + 1);
    }
    assert.equal(dependents.size, 50, 'every node is an input of something');
    assert.ok(
      [...dependents.values()].some((n) => n >= 2),
      'some inputs are shared',
    );
    // a single node is addressable by name too
    const [node] = await nixInstantiate(fixture.file, ['node-0-3'], { salt });
    assert.match(node!, /-node-0-3\.drv$/);
    process.stderr.write(`# layeredDag 5x10 built in ${ms} ms inside a machine\n`);
  });

  it('chain: n derivations in order', async () => {
    const fixture = chain(4);
    const salt = freshSalt();
    await instantiate(fixture, salt);
    const result = await nixBuild(machine, fixture.file, fixture.attrs, salt);
    assert.equal(result.exitCode, 0, result.stderr);
    const order = [...result.stderr.matchAll(/^building '\/nix\/store\/[0-9a-z]{32}-(.*)\.drv'/gm)].map((m) => m[1]);
    assert.deepEqual(order, fixture.links);
  });

  it('multiOutput: the producer gives both outputs, the consumer uses foo', async () => {
    const fixture = multiOutput();
    const salt = freshSalt();
    const [consumerDrv] = await instantiate(fixture, salt);
    const [producerDrv] = await nixInstantiate(fixture.file, ['producer'], { salt });
    const [foo, out] = await outputPathsOf(producerDrv!);
    assert.match(foo!, /-multi-producer-foo$/);
    assert.match(out!, /-multi-producer$/);
    assert.deepEqual(await outputsOf(producerDrv!), { foo, out });
    const result = await nixBuild(machine, fixture.file, fixture.attrs, salt);
    assert.equal(result.exitCode, 0, result.stderr);
    assert.deepEqual(await machine.isValid([foo!, out!]), new Set([foo, out]), 'building the producer made both outputs valid');
    assert.equal(readFileSync(machine.hostPathOf(foo!), 'utf8'), 'foo-output\n');
    assert.equal(readFileSync(machine.hostPathOf(out!), 'utf8'), 'out-output\n');
    const [consumerOut] = await outputPathsOf(consumerDrv!);
    assert.equal(readFileSync(machine.hostPathOf(consumerOut!), 'utf8'), `${foo}\nfoo-output\n`);
  });

  it('failingBranch: the failing builder exits 3, its dependent is not built, the independent branch is', async () => {
    const fixture = failingBranch();
    const salt = freshSalt();
    await instantiate(fixture, salt);
    const [failing, dependent, independent, all] = await nixInstantiate(fixture.file, ['failing', 'dependent', 'independent', 'all'], { salt });
    const result = await nixBuild(machine, fixture.file, fixture.attrs, salt, ['--keep-going']);
    assert.notEqual(result.exitCode, 0);
    assert.match(result.stderr, new RegExp(`builder for '${failing}' failed with exit code ${fixture.exitCode}`));
    const outputOf = async (drv: string | undefined) => (await outputPathsOf(drv!))[0]!;
    const failingOut = await outputOf(failing);
    const dependentOut = await outputOf(dependent);
    const independentOut = await outputOf(independent);
    const allOut = await outputOf(all);
    assert.deepEqual(await machine.isValid([failingOut, dependentOut, independentOut, allOut]), new Set([independentOut]));
    // Nix keeps the failed build's log, bzip2-compressed, where logPathFor says
    assert.equal(existsSync(machine.logPathFor(failing!)), true, machine.logPathFor(failing!));
    const log = await machine.readLog(failing!);
    assert.ok(log !== undefined);
    for (const line of fixture.logLines) assert.ok(log.includes(line), `log has ${JSON.stringify(line)}:\n${log}`);
    assert.equal(existsSync(machine.logPathFor(dependent!)), false, 'the dependent never ran');
  });

  it('system and requiredSystemFeatures: builds only where the store offers them', async () => {
    // not big-parallel or kvm: Nix 2.8 enables those by default
    const fixture = chain(2, { system: 'x86_64-darwin', requiredSystemFeatures: ['nixfarm-test-feature'] });
    const salt = freshSalt();
    const [top] = await instantiate(fixture, salt);
    const text = readFileSync(top!, 'utf8');
    assert.match(text, /"x86_64-darwin"/);
    assert.match(text, /\("requiredSystemFeatures","nixfarm-test-feature"\)/);

    const plain = await nixBuild(machine, fixture.file, fixture.attrs, salt);
    assert.notEqual(plain.exitCode, 0);
    assert.match(plain.stderr, /a 'x86_64-darwin' with features \{nixfarm-test-feature\} is required to build/);

    const mac = new SimulatedMachine('fake-mac', { nixConfig: ['extra-platforms = x86_64-darwin', 'system-features = nixfarm-test-feature'] });
    try {
      const result = await nixBuild(mac, fixture.file, fixture.attrs, salt);
      assert.equal(result.exitCode, 0, result.stderr);
    } finally {
      await mac.destroy();
    }
  });

  it('logPathFor follows Nix 2.8: drvs/<2 chars>/<rest of the basename>.bz2', async () => {
    const fixture = chain(1);
    const salt = freshSalt();
    const [drv] = await instantiate(fixture, salt);
    const result = await nixBuild(machine, fixture.file, fixture.attrs, salt);
    assert.equal(result.exitCode, 0, result.stderr);
    const base = drv!.slice('/nix/store/'.length);
    assert.equal(machine.logPathFor(drv!), join(machine.nixDir, 'var/log/nix/drvs', base.slice(0, 2), `${base.slice(2)}.bz2`));
    const compressed = readFileSync(machine.logPathFor(drv!));
    assert.equal(compressed.subarray(0, 3).toString(), 'BZh', 'bzip2 magic');
    assert.match((await machine.readLog(drv!)) ?? '', new RegExp(`link-0 salt=${salt}`));
  });
});
