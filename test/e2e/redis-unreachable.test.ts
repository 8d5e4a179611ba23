import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { RedisRefusedError, RedisWaitAbortedError, connectRedis, redactRedisUrl, type WorkerListing } from '@nixfarm/shared';
import { freePort } from '../harness/free-port.js';
import { startPrivateRedis, type PrivateRedis } from '../harness/private-redis.js';
import { NIXFARM_BIN, spawnNixfarm, type CommandResult } from '../harness/test-farm.js';
import { sleep, waitFor } from '../harness/poll.js';
import { SimulatedMachine } from '../harness/simulated-machine.js';
import { killGroup, onProcessExit, removeTreeSync, withParentDeathSignal } from '../harness/process-cleanup.js';
import { chain, freshSalt } from '../harness/nix-fixtures.js';

/**
 * Redis unreachable at start: the coordinator and the workers say so once,
 * clearly, keep retrying with back-off, and become ready when Redis comes;
 * a stop asked for while they wait ends them at once, cleanly.
 */

const quietLogger = pino({ level: 'silent' });

/** A started `nixfarm` process whose stderr (and stdout) is kept for assertions. */
interface Started {
  process: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function track(child: ChildProcess, logFile: string): Started {
  let output = '';
  const log = createWriteStream(logFile, { flags: 'a' });
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on('data', (c: Buffer) => {
      output += c.toString();
      log.write(c);
    });
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { process: child, output: () => output, exited };
}

/** Lines that say Redis cannot be reached, in the person-readable form the CLI prints. */
function unreachableNotices(output: string, who: string): string[] {
  return output.split('\n').filter((l) => l.startsWith(`${who}: cannot reach Redis`));
}

/**
 * Makes Redis reachable at a second address by relaying TCP to the real one:
 * a worker pointed at `port` sees nothing listening until start(), then the
 * coordinator's own Redis.
 */
class RedisRelay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  constructor(
    readonly port: number,
    private readonly targetPort: number,
  ) {}

  start(): Promise<void> {
    const server = createServer((client) => {
      const upstream = createConnection({ host: '127.0.0.1', port: this.targetPort });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.once('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server === undefined ? resolve() : this.server.close(() => resolve())));
  }
}

describe('connectRedis: waiting for Redis', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('says once that Redis is unreachable, retries with back-off, and connects when Redis comes', async () => {
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}`;
    const notices: string[] = [];
    const started = Date.now();
    // the log after start, as JSON lines: a lost connection is said once, not on every reconnect attempt
    const logLines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(JSON.parse(line)) });
    const connecting = connectRedis({ url, logger, onNotice: (m) => notices.push(m), firstRetryMs: 200, maxRetryMs: 800 });
    await waitFor(
      'the first notice',
      () => notices.length > 0,
      10_000,
      () => notices.join('\n'),
    );
    assert.equal(
      notices[0],
      `cannot reach Redis at ${url} (ECONNREFUSED); retrying every 0.2 s, backing off to every 0.8 s — is redis-server running there? (--redis)`,
    );
    await sleep(2500); // several attempts at 0.2, 0.4, 0.8, 0.8 ... s
    assert.equal(notices.length, 1, `said once, not on every attempt: ${notices.join(' | ')}`);
    const redis = await startPrivateRedis({ port });
    cleanups.push(() => redis.stop());
    const client = await connecting;
    cleanups.push(() => client.disconnect());
    assert.equal(await client.ping(), 'PONG');
    assert.match(notices[1] ?? '', new RegExp(`^connected to Redis at redis://127\\.0\\.0\\.1:${port} after \\d+ s$`));
    assert.ok(Date.now() - started >= 2500);

    // Once connected, the client reconnects by itself after a loss, as ioredis does, saying the loss once.
    logLines.length = 0;
    await redis.stop();
    await sleep(3000); // reconnect attempts every 50 ms, growing to 2 s
    const lost = logLines.filter((l) => l.level === 40 && l.msg.startsWith('lost Redis at'));
    assert.equal(lost.length, 1, `the loss is said once: ${JSON.stringify(logLines)}`);
    assert.match(lost[0]!.msg, /ECONNREFUSED|Connection is closed|connect/);
    await redis.restart(); // stopped: starts it again
    await waitFor(
      'a reconnect after a Redis restart',
      async () => (await client.ping().catch(() => 'down')) === 'PONG',
      20_000,
      () => client.status,
    );
    await waitFor(
      "'Redis is back' in the log",
      () => logLines.some((l) => l.msg === 'Redis is back'),
      5000,
      () => JSON.stringify(logLines.slice(-5)),
    );
  });

  it('stops waiting at once when aborted', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const controller = new AbortController();
    const notices: string[] = [];
    const connecting = connectRedis({ url, logger: quietLogger, signal: controller.signal, onNotice: (m) => notices.push(m), firstRetryMs: 5000 });
    await waitFor(
      'the first notice',
      () => notices.length > 0,
      10_000,
      () => '',
    );
    const abortedAt = Date.now();
    controller.abort();
    await assert.rejects(connecting, (error: unknown) => {
      assert.ok(error instanceof RedisWaitAbortedError);
      assert.equal(error.message, `stopped while waiting for Redis at ${url}; nothing was started`);
      return true;
    });
    assert.ok(Date.now() - abortedAt < 1000, 'not after the 5 s pause');
    await assert.rejects(
      connectRedis({ url, logger: quietLogger, signal: controller.signal }),
      RedisWaitAbortedError,
      'an already aborted wait does not start',
    );
  });

  it('gives up at once on refused credentials, and never shows the password', async () => {
    const port = await freePort();
    const { command, args } = withParentDeathSignal('redis-server', [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--requirepass',
      'right-one',
    ]);
    const child = spawn(command, args, { stdio: 'ignore', detached: true });
    const unregister = onProcessExit(() => killGroup(child.pid, 'SIGKILL'));
    cleanups.push(() => {
      killGroup(child.pid, 'SIGKILL');
      unregister();
    });
    const url = `redis://:wrong-one@127.0.0.1:${port}`;
    const notices: string[] = [];
    // redis-server may still be starting: refused connections are waited for, the wrong password is not.
    await assert.rejects(connectRedis({ url, logger: quietLogger, onNotice: (m) => notices.push(m), firstRetryMs: 100 }), (error: unknown) => {
      assert.ok(error instanceof RedisRefusedError);
      assert.match(error.message, new RegExp(`^Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port} refused the connection: WRONGPASS`));
      assert.match(error.message, /check the user and password in the URL \(--redis, like redis:\/\/:PASSWORD@host:6379\)/);
      assert.doesNotMatch(error.message, /wrong-one/);
      return true;
    });
    for (const n of notices) assert.doesNotMatch(n, /wrong-one/);
    assert.equal(redactRedisUrl('redis://user:secret@host:1/0'), 'redis://user:***@host:1/0');
    assert.equal(redactRedisUrl('redis://host:1'), 'redis://host:1');
  });
});

describe('coordinator and worker started before Redis', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-redis-wait-'));
  const stateDir = join(dir, 'coordinator');
  const gcRootsDir = `/nix/var/nix/gcroots/nixfarm-test/${dir.split('/').pop()}`;
  const processes: ChildProcess[] = [];
  const machines: SimulatedMachine[] = [];
  let redisPort: number;
  let redis: PrivateRedis | undefined;
  let relay: RedisRelay | undefined;
  let coordinator: Started;
  let httpUrl: string;
  const auth = (): RequestInit => ({ headers: { authorization: `Bearer ${readFileSync(join(stateDir, 'api-token-read'), 'utf8').trim()}` } });
  const unregister = onProcessExit(() => {
    for (const p of processes) killGroup(p.pid, 'SIGKILL');
    removeTreeSync(dir);
  });

  const diagnostics =
    (...started: Started[]) =>
    (): string =>
      started.map((s) => s.output().split('\n').slice(-30).join('\n')).join('\n---\n');

  function startCoordinator(name: string, redisUrl: string, state: string): Started {
    const child = spawn(
      process.execPath,
      [
        NIXFARM_BIN,
        'coordinator',
        '--state-dir',
        state,
        '--redis',
        redisUrl,
        '--http-port',
        '0',
        '--ssh-host',
        '127.0.0.1',
        '--ssh-port',
        '0',
        '--gc-roots-dir',
        gcRootsDir,
        '--log-level',
        'debug',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, NIX_CONFIG: 'substituters =' } },
    );
    processes.push(child);
    return track(child, join(dir, `${name}.log`));
  }

  async function startWorker(name: string, redisUrl: string): Promise<Started> {
    mkdirSync(join(dir, 'machines'), { recursive: true });
    const machine = new SimulatedMachine(name, { root: join(dir, 'machines'), nixConfig: ['build-users-group ='] });
    machines.push(machine);
    const workerState = join(machine.stateDir, 'worker');
    const key = await cli(['worker-key', '--state-dir', workerState]);
    assert.equal(key.exitCode, 0, key.stderr);
    const auth = await cli(['authorize', '--state-dir', stateDir, key.stdout.trim()]);
    assert.equal(auth.exitCode, 0, auth.stderr);
    const child = machine.spawn(process.execPath, [
      NIXFARM_BIN,
      'worker',
      '--join',
      stateDir,
      '--redis',
      redisUrl,
      '--name',
      name,
      '--state-dir',
      workerState,
      '--log-level',
      'debug',
      '--nix-option',
      'sandbox=true',
      '--nix-option',
      'substituters=',
    ]);
    processes.push(child);
    return track(child, join(dir, `${name}.log`));
  }

  function cli(args: readonly string[]): Promise<CommandResult> {
    // The CLI finds the admin token in the coordinator's state dir, as on the coordinator's machine.
    return spawnNixfarm(args, { env: { ...process.env, NIX_CONFIG: 'substituters =', NIXFARM_TOKEN: '', NIXFARM_STATE_DIR: stateDir } }).result;
  }

  /** SIGTERM to a process group; the exit code, or 'hung' if it did not exit in time. */
  async function terminate(started: Started, timeoutMs: number): Promise<number | null | 'hung'> {
    if (started.process.exitCode !== null) return started.process.exitCode;
    killGroup(started.process.pid, 'SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([started.exited, new Promise<'hung'>((r) => (timer = setTimeout(() => r('hung'), timeoutMs)))]);
    clearTimeout(timer);
    if (code === 'hung') killGroup(started.process.pid, 'SIGKILL');
    return code;
  }

  before(async () => {
    redisPort = await freePort();
  });

  after(async () => {
    for (const p of processes) if (p.exitCode === null && p.signalCode === null) killGroup(p.pid, 'SIGTERM');
    await sleep(500);
    for (const p of processes) if (p.exitCode === null && p.signalCode === null) killGroup(p.pid, 'SIGKILL');
    for (const m of machines) await m.destroy();
    await relay?.stop();
    await redis?.stop();
    await rm(gcRootsDir, { recursive: true, force: true });
    unregister();
    removeTreeSync(dir);
  });

  it('the coordinator says Redis is unreachable, keeps retrying, and becomes ready when Redis starts', async () => {
    const url = `redis://127.0.0.1:${redisPort}`;
    coordinator = startCoordinator('coordinator', url, stateDir);
    const who = 'nixfarm coordinator';
    await waitFor('the unreachable notice', () => unreachableNotices(coordinator.output(), who).length > 0, 30_000, diagnostics(coordinator));
    assert.deepEqual(unreachableNotices(coordinator.output(), who), [
      `${who}: cannot reach Redis at ${url} (ECONNREFUSED); retrying every 1 s, backing off to every 5 s — is redis-server running there? (--redis)`,
    ]);
    await sleep(5000);
    assert.equal(coordinator.process.exitCode, null, 'still running, still trying');
    assert.equal(unreachableNotices(coordinator.output(), who).length, 1, 'said once');
    assert.ok(!existsSync(join(stateDir, 'coordinator.json')), 'not ready without Redis');

    redis = await startPrivateRedis({ port: redisPort });
    await waitFor('coordinator ready', () => coordinator.output().includes('nixfarm coordinator ready'), 30_000, diagnostics(coordinator));
    assert.match(coordinator.output(), new RegExp(`${who}: connected to Redis at ${url.replace(/\./g, '\\.')} after \\d+ s`));
    httpUrl = (JSON.parse(readFileSync(join(stateDir, 'coordinator.json'), 'utf8')) as { httpUrl: string }).httpUrl;
    const health = (await (await fetch(new URL('/api/health', httpUrl))).json()) as { ok: boolean };
    assert.equal(health.ok, true);
  });

  it('a worker says Redis is unreachable, keeps retrying, then registers and builds when Redis becomes reachable', async () => {
    const relayPort = await freePort();
    const url = `redis://127.0.0.1:${relayPort}`;
    const worker = await startWorker('late', url);
    const who = 'nixfarm worker late';
    await waitFor('the unreachable notice', () => unreachableNotices(worker.output(), who).length > 0, 60_000, diagnostics(worker));
    assert.deepEqual(unreachableNotices(worker.output(), who), [
      `${who}: cannot reach Redis at ${url} (ECONNREFUSED); retrying every 1 s, backing off to every 5 s — is redis-server running there? (--redis)`,
    ]);
    await sleep(4000);
    assert.equal(worker.process.exitCode, null, 'still running, still trying');
    assert.equal(unreachableNotices(worker.output(), who).length, 1, 'said once');
    const before = (await (await fetch(new URL('/api/workers', httpUrl), auth())).json()) as { workers: WorkerListing[] };
    assert.ok(!before.workers.some((w) => w.name === 'late'), 'not registered without Redis');

    relay = new RedisRelay(relayPort, redisPort);
    await relay.start();
    await waitFor('the worker ready', () => worker.output().includes('nixfarm worker late ready'), 60_000, diagnostics(worker));
    assert.match(worker.output(), new RegExp(`${who}: connected to Redis at redis://127\\.0\\.0\\.1:${relayPort} after \\d+ s`));
    await waitFor(
      'the worker registered',
      async () =>
        ((await (await fetch(new URL('/api/workers', httpUrl), auth())).json()) as { workers: WorkerListing[] }).workers.some(
          (w) => w.name === 'late' && w.alive,
        ),
      30_000,
      diagnostics(worker, coordinator),
    );
    const built = await cli(['build', '--coordinator', httpUrl, chain(2).file, '-A', 'all', '--argstr', 'salt', freshSalt()]);
    assert.equal(built.exitCode, 0, `${built.stderr}\n${diagnostics(worker, coordinator)()}`);
    assert.match(built.stderr, /built link-1 on late/);
    assert.equal(await terminate(worker, 30_000), 0, 'and it stops cleanly');
  });

  it('a worker stopped while it waits for Redis exits at once with 0, saying so', async () => {
    const dead = `redis://127.0.0.1:${await freePort()}`;
    const worker = await startWorker('quitter', dead);
    await waitFor('the unreachable notice', () => unreachableNotices(worker.output(), 'nixfarm worker quitter').length > 0, 60_000, diagnostics(worker));
    const stoppedAt = Date.now();
    assert.equal(await terminate(worker, 10_000), 0, diagnostics(worker)());
    assert.ok(Date.now() - stoppedAt < 10_000);
    assert.match(worker.output(), new RegExp(`nixfarm: stopped while waiting for Redis at ${dead.replace(/\./g, '\\.')}; nothing was started`));
    const { workers } = (await (await fetch(new URL('/api/workers', httpUrl), auth())).json()) as { workers: WorkerListing[] };
    assert.ok(!workers.some((w) => w.name === 'quitter'));
  });

  it('a coordinator stopped while it waits for Redis exits at once with 0, saying so', async () => {
    const dead = `redis://127.0.0.1:${await freePort()}`;
    const other = join(dir, 'coordinator-2');
    const waiting = startCoordinator('coordinator-2', dead, other);
    await waitFor('the unreachable notice', () => unreachableNotices(waiting.output(), 'nixfarm coordinator').length > 0, 30_000, diagnostics(waiting));
    const stoppedAt = Date.now();
    assert.equal(await terminate(waiting, 10_000), 0, diagnostics(waiting)());
    assert.ok(Date.now() - stoppedAt < 10_000);
    assert.match(waiting.output(), new RegExp(`nixfarm: stopped while waiting for Redis at ${dead.replace(/\./g, '\\.')}; nothing was started`));
    assert.ok(!existsSync(join(other, 'coordinator.json')));
  });
});
