import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { ServePool, ServeSession, parseDerivation, type BuildJob, type Derivation } from '@nixfarm/shared';
import { ServeBuilder } from '@nixfarm/build';
import { StoreCopier } from '@nixfarm/worker';
import { SimulatedMachine } from '../harness/simulated-machine.js';
import { chain, failingBranch, freshSalt, nixInstantiate, derivationClosure } from '../harness/nix-fixtures.js';
import { sleep } from '../harness/poll.js';

const NIX_OPTIONS = ['--option', 'sandbox', 'true', '--option', 'substituters', ''];

function readDrv(path: string): Derivation {
  return parseDerivation(path, readFileSync(path, 'utf8'));
}

/** The job the coordinator would queue for this derivation (inputs: sources plus the used outputs of input derivations). */
function jobFor(drv: Derivation, extra: Partial<BuildJob> = {}): BuildJob {
  const inputPaths = [...drv.inputSrcs];
  for (const [input, names] of Object.entries(drv.inputDrvs)) for (const n of names) inputPaths.push(readDrv(input).outputs[n]!);
  return { drvPath: drv.path, name: drv.name, system: drv.system, requiredFeatures: [], outputs: drv.outputs, inputPaths, ...extra };
}

function hostValid(paths: readonly string[]): Set<string> {
  const result = spawnSync('nix-store', ['--check-validity', '--print-invalid', ...paths], { encoding: 'utf8' });
  const invalid = new Set(result.stdout.split('\n').filter((l) => l.length > 0));
  return new Set(paths.filter((p) => !invalid.has(p)));
}

/**
 * The worker's data path on real stores, without a farm around it: the
 * host's store stands for the coordinator's, a simulated machine's for the
 * worker's, both reached through real `nix-store --serve` sessions.
 */
describe('serve sessions: copies and builds between two real stores', () => {
  let machine: SimulatedMachine;
  let hostPool: ServePool;
  let machinePool: ServePool;
  let copier: StoreCopier;
  let builder: ServeBuilder;
  const hostSessions: ServeSession[] = [];
  const machineSessions: ServeSession[] = [];
  let scratch: string;

  before(() => {
    scratch = mkdtempSync(join(tmpdir(), 'nixfarm-serve-'));
    machine = new SimulatedMachine(`serve-${process.pid}`, { nixConfig: ['build-users-group ='] });
    hostPool = new ServePool({
      maxIdle: 4,
      start: async () => {
        const session = await ServeSession.start({ command: 'nix-store', args: ['--serve', '--write', ...NIX_OPTIONS], peer: 'the host store' });
        hostSessions.push(session);
        return session;
      },
    });
    machinePool = new ServePool({
      maxIdle: 4,
      start: async () => {
        const line = machine.commandLine('nix-store', ['--serve', '--write', ...NIX_OPTIONS]);
        const session = await ServeSession.start({ command: line.command, args: line.args, env: machine.environment(), peer: 'the machine store' });
        machineSessions.push(session);
        return session;
      },
    });
    copier = new StoreCopier({ local: machinePool, coordinator: hostPool, logger: pino({ level: 'silent' }) });
    builder = new ServeBuilder({ store: machinePool, readDerivation: async (p) => readDrv(p) });
  });

  after(async () => {
    await machinePool?.close();
    await hostPool?.close();
    machine?.destroy();
    rmSync(scratch, { recursive: true, force: true });
  });

  /** Builds a fixture on the host and returns the output of its `all` attribute and that output's closure size. */
  async function builtOnHost(length: number): Promise<{ top: string; closure: string[] }> {
    const fixture = chain(length);
    const [drvPath] = await nixInstantiate(fixture.file, fixture.attrs, { salt: freshSalt() });
    const top = execFileSync('nix-store', ['--realise', drvPath!, ...NIX_OPTIONS], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const closure = execFileSync('nix-store', ['--query', '--requisites', top], { encoding: 'utf8' }).trim().split('\n');
    return { top, closure };
  }

  it('copies a closure in one stream, then finds nothing left to copy', async () => {
    const { top, closure } = await builtOnHost(3);
    assert.equal(closure.length, 3, `closure of ${top}: ${closure.join(' ')}`);
    assert.equal(await copier.copyIn([top]), closure.length);
    assert.deepEqual(await machine.isValid(closure), new Set(closure));
    assert.equal(await copier.copyIn([top]), 0, 'a second copy moves nothing');
  });

  it('three copies of the same closure at once fetch each path once', async () => {
    const { top, closure } = await builtOnHost(4);
    const counts = await Promise.all([copier.copyIn([top]), copier.copyIn([top]), copier.copyIn([top])]);
    const copied = counts.reduce((a, b) => a + b, 0);
    assert.equal(copied, closure.length, `copied ${copied} of ${closure.length} paths (${counts.join(', ')})`);
    assert.deepEqual(await machine.isValid(closure), new Set(closure));
  });

  it('builds from the request alone (no .drv copied), streams the log, and copies the output back', async () => {
    const fixture = chain(2);
    const salt = freshSalt();
    const [top] = await nixInstantiate(fixture.file, fixture.attrs, { salt });
    const [first] = (await derivationClosure([top!])).filter((d) => d.endsWith('-link-0.drv'));
    const drv = readDrv(first!);
    const job = jobFor(drv);
    await copier.copyIn(job.inputPaths);
    const lines: string[] = [];
    const attempt = await builder.build(job, { onLogLine: (l) => lines.push(l) });
    assert.equal(attempt.status, 'succeeded', attempt.error);
    const out = drv.outputs.out!;
    assert.deepEqual(await machine.isValid([out, drv.path]), new Set([out]), 'the output is valid in the machine, the .drv never went there');
    assert.ok(
      lines.some((l) => l.includes(`link-0 salt='${salt}'`) || l.includes(`link-0 salt=${salt}`)),
      `log: ${lines.join(' | ')}`,
    );
    assert.deepEqual(hostValid([out]), new Set(), 'not on the host yet');
    assert.equal(await copier.copyOut([out]), 1);
    assert.deepEqual(hostValid([out]), new Set([out]));
    assert.equal(readFileSync(out, 'utf8'), readFileSync(machine.hostPathOf(out), 'utf8'));
  });

  it("reports a builder failure as failed with Nix's message, a timeout as timed-out, a log past the limit as log-limit-exceeded", async () => {
    const fixture = failingBranch();
    const [all] = await nixInstantiate(fixture.file, fixture.attrs, { salt: freshSalt() });
    const failing = readDrv((await derivationClosure([all!])).find((d) => d.endsWith('-failing-step.drv'))!);
    await copier.copyIn(jobFor(failing).inputPaths);
    const lines: string[] = [];
    const failed = await builder.build(jobFor(failing), { onLogLine: (l) => lines.push(l) });
    assert.equal(failed.status, 'failed');
    assert.match(failed.error ?? '', /failed with exit code 3/);
    for (const l of fixture.logLines)
      assert.ok(
        lines.some((x) => x.includes(l)),
        `log has ${l}: ${lines.join(' | ')}`,
      );

    const slow = chain(1, { sleepSeconds: 30 });
    const [slowDrv] = await nixInstantiate(slow.file, slow.attrs, { salt: freshSalt() });
    const started = Date.now();
    const timedOut = await builder.build(jobFor(readDrv(slowDrv!), { timeoutSeconds: 1 }), { onLogLine: () => undefined });
    assert.equal(timedOut.status, 'timed-out', timedOut.error);
    assert.ok(Date.now() - started < 15_000, `timed out after ${Date.now() - started} ms`);

    const chatty = new ServeBuilder({ store: machinePool, readDerivation: async (p) => readDrv(p), maxLogBytes: 8 });
    const [loud] = await nixInstantiate(fixture.file, ['independent'], { salt: freshSalt() });
    const limited = await chatty.build(jobFor(readDrv(loud!)), { onLogLine: () => undefined });
    assert.equal(limited.status, 'log-limit-exceeded', limited.error);
  });

  it('a cancelled build ends within seconds and its builder is gone', async () => {
    const slow = chain(1, { sleepSeconds: 60 });
    const salt = freshSalt();
    const [drvPath] = await nixInstantiate(slow.file, slow.attrs, { salt });
    const job = jobFor(readDrv(drvPath!));
    await copier.copyIn(job.inputPaths);
    const controller = new AbortController();
    const attempt = builder.build(job, { onLogLine: () => undefined, signal: controller.signal });
    attempt.catch(() => undefined);
    // the builder's command line carries the salt
    const deadline = Date.now() + 20_000;
    let sawStart = false;
    while (!sawStart && Date.now() < deadline) {
      sawStart = spawnSync('pgrep', ['-f', salt]).status === 0;
      if (!sawStart) await sleep(50);
    }
    assert.ok(sawStart, 'the builder started');
    const cancelledAt = Date.now();
    controller.abort();
    assert.equal((await attempt).status, 'cancelled');
    assert.ok(Date.now() - cancelledAt < 1000, `cancel took ${Date.now() - cancelledAt} ms`);
    // Nix sees the session hang up and kills the builder
    const gone = Date.now() + 5000;
    let running = true;
    while (running && Date.now() < gone) {
      running = spawnSync('pgrep', ['-f', salt]).status === 0;
      if (running) await sleep(100);
    }
    assert.equal(running, false, 'the builder process was killed');
    assert.deepEqual(await machine.isValid([job.outputs.out!]), new Set(), 'no output from a cancelled build');
  });

  it('an export that dies mid-stream leaves nothing half-imported, and the next copy succeeds', async () => {
    const file = join(scratch, `big-${freshSalt()}`);
    writeFileSync(file, randomBytes(96 * 1024 * 1024));
    const big = execFileSync('nix-store', ['--add', file], { encoding: 'utf8' }).trim();
    try {
      const relayed = (): number => machineSessions.reduce((sum, s) => sum + ((s.process.stdin as { bytesWritten?: number } | null)?.bytesWritten ?? 0), 0);
      const before = relayed();
      const copy = copier.copyIn([big]);
      copy.catch(() => undefined);
      // kill the exporter once a few MiB of the 96 MiB NAR have reached the importer
      const deadline = Date.now() + 10_000;
      while (relayed() - before < 4 * 1024 * 1024 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      assert.ok(relayed() - before >= 4 * 1024 * 1024, 'the stream had started');
      for (const s of hostSessions) s.process.kill('SIGKILL');
      await assert.rejects(copy, (error: Error & { retryable?: boolean }) => error.retryable === true && /host store/.test(error.message));
      assert.deepEqual(await machine.isValid([big]), new Set(), 'the partial import never became valid');
      assert.equal(await copier.copyIn([big]), 1, 'fresh sessions copy it whole');
      assert.deepEqual(await machine.isValid([big]), new Set([big]));
      assert.equal(spawnSync('cmp', [file, machine.hostPathOf(big)]).status, 0, 'the copy is byte for byte the original');
    } finally {
      spawnSync('nix-store', ['--delete', big], { stdio: 'ignore' });
    }
  });

  it("copies out with the machine's nix-store --export writing straight into the host's session; a failed export closes that session and the next copy succeeds", async () => {
    const exporter = (args: (paths: readonly string[]) => string[]) => (paths: readonly string[], sink: Writable) => {
      const line = machine.commandLine('nix-store', args(paths));
      return spawn(line.command, line.args, { stdio: ['ignore', sink, 'pipe'], env: machine.environment() });
    };
    const direct = new StoreCopier({
      local: machinePool,
      coordinator: hostPool,
      logger: pino({ level: 'silent' }),
      exporter: exporter((paths) => ['--export', ...paths]),
    });
    const built = async (): Promise<string> => {
      const fixture = chain(1);
      const [top] = await nixInstantiate(fixture.file, fixture.attrs, { salt: freshSalt() });
      const drv = readDrv(top!);
      await copier.copyIn(jobFor(drv).inputPaths);
      const attempt = await builder.build(jobFor(drv), { onLogLine: () => undefined });
      assert.equal(attempt.status, 'succeeded', attempt.error);
      return drv.outputs.out!;
    };

    // not an export at all (nix-store --help): the host's import refuses it, or the exporter fails, the copy fails retryably, nothing became valid
    const garbage = await built();
    const broken = new StoreCopier({ local: machinePool, coordinator: hostPool, logger: pino({ level: 'silent' }), exporter: exporter(() => ['--help']) });
    await assert.rejects(broken.copyOut([garbage]), (error: Error & { retryable?: boolean }) => error.retryable === true);
    assert.deepEqual(hostValid([garbage]), new Set());

    const out = await built();
    const tally = { bytes: 0 };
    assert.equal(await direct.copyOut([out], tally), 1);
    assert.deepEqual(hostValid([out]), new Set([out]));
    assert.equal(readFileSync(out, 'utf8'), readFileSync(machine.hostPathOf(out), 'utf8'));
    assert.equal(execFileSync('nix-store', ['--verify-path', out], { encoding: 'utf8' }), '');
    assert.equal(tally.bytes, Number(execFileSync('nix-store', ['-q', '--size', out], { encoding: 'utf8' }).trim()), 'the NAR size stands for the bytes');
    // the session that imported it is whole: a plain query on it works
    assert.deepEqual(await hostPool.use((h) => h.connection.queryValidPaths([out])), new Set([out]));
  });
});
