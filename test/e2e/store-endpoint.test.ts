import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { pino } from 'pino';
import ssh2 from 'ssh2';
import { AuthorizedKeys, StoreEndpoint, parseStoreCommand, type StoreEndpointAddress } from '@nixfarm/coordinator';
import {
  CoordinatorUnreachableError,
  HostKeyMismatchError,
  WorkerKeyNotAuthorisedError,
  loadOrCreateWorkerKey,
  probeCoordinator,
  writeSshClientConfig,
  type SshClientConfig,
  type WorkerKey,
} from '@nixfarm/worker';
import { waitFor } from '../harness/poll.js';

/**
 * The SSH side of nixfarm with real parts only: the ssh2 endpoint in this
 * process, the OpenSSH client, Nix 2.8, and a second Nix store in a mount
 * namespace standing in for a worker machine.
 */

const NIX_ENV = { ...process.env, NIX_CONFIG: 'substituters =' };
/** Every external command gets a deadline: a hang must fail the test, not stall the run. */
const COMMAND_TIMEOUT_MS = 30_000;
/** Fixed script; the namespace's /nix and the command come in as positional arguments, never spliced into it. */
const IN_NAMESPACE = 'mount --bind "$0" /nix && exec "$@"';

const logLines: string[] = [];
const logger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });
const logged = (level: number): Array<Record<string, unknown>> =>
  logLines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((entry) => entry.level === level);

// Short: the control socket lives in <stateDir>/ssh and unix socket paths are limited.
const root = mkdtempSync('/tmp/nfse-');
const coordinatorDir = join(root, 'coord');
const workerDir = join(root, 'worker');
const namespaceNix = join(root, 'ns', 'nix');

let endpoint: StoreEndpoint;
let address: StoreEndpointAddress;
let worker: WorkerKey;
let ssh: SshClientConfig;
const sshConfigs: string[] = [];
const hostPathsAdded: string[] = [];

async function sshClient(
  config: string,
  args: string[],
  input?: Buffer,
  /** keep stdin open until this many bytes came back: hanging up right after a greeting races the server's reply */
  replyBytes?: number,
): Promise<{ exitCode: number | undefined; stdout: Buffer; stderr: string }> {
  if (input === undefined || replyBytes === undefined) {
    const result = await execa('ssh', ['-F', config, ...args], {
      reject: false,
      encoding: 'buffer',
      timeout: COMMAND_TIMEOUT_MS,
      ...(input === undefined ? { stdin: 'ignore' as const } : { input }),
    });
    return { exitCode: result.exitCode, stdout: Buffer.from(result.stdout), stderr: Buffer.from(result.stderr).toString('utf8') };
  }
  const child = execa('ssh', ['-F', config, ...args], { reject: false, encoding: 'buffer', timeout: COMMAND_TIMEOUT_MS, stdin: 'pipe' });
  let received = 0;
  child.stdout?.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received >= replyBytes) child.stdin?.end();
  });
  child.stdin?.write(input);
  const result = await child;
  return { exitCode: result.exitCode, stdout: Buffer.from(result.stdout as Uint8Array), stderr: Buffer.from(result.stderr as Uint8Array).toString('utf8') };
}

function inNamespace(command: string[], env: NodeJS.ProcessEnv = NIX_ENV) {
  return execa('unshare', ['-m', '--propagation', 'private', 'sh', '-c', IN_NAMESPACE, namespaceNix, ...command], {
    reject: false,
    stdin: 'ignore',
    env,
    timeout: COMMAND_TIMEOUT_MS,
  });
}

/** A fresh file in the host store, with content no other test run can share. */
async function addToHostStore(name: string): Promise<string> {
  const file = join(root, name);
  writeFileSync(file, `${name} ${randomBytes(16).toString('hex')}\n`);
  const result = await execa('nix-store', ['--add', file], { env: NIX_ENV, timeout: COMMAND_TIMEOUT_MS });
  hostPathsAdded.push(result.stdout.trim());
  return result.stdout.trim();
}

async function hostValid(path: string): Promise<boolean> {
  return (await execa('nix-store', ['--check-validity', path], { reject: false, env: NIX_ENV })).exitCode === 0;
}

function probe(overrides: Partial<Parameters<typeof probeCoordinator>[0]> = {}) {
  return probeCoordinator({
    host: address.host,
    port: address.port,
    hostKeyLine: address.hostKey,
    privateKeyPath: worker.privateKeyPath,
    logger,
    timeoutMs: 10_000,
    ...overrides,
  });
}

/** nix-store --serve's greeting, client side: magic 1, then the protocol version, as 64-bit little-endian words. */
const SERVE_GREETING = Buffer.from('eb9d0c39000000000702000000000000', 'hex');
const SERVE_MAGIC_2 = 0x5452eecbn;
/** nix-daemon's: WORKER_MAGIC_1 and a client version. */
const DAEMON_GREETING = Buffer.from('6378696e000000001501000000000000', 'hex');
const DAEMON_MAGIC_2 = 0x6478696fn;

/** The Nix processes this test process spawned (the endpoint's children). */
async function nixChildren(): Promise<number[]> {
  const result = await execa('ps', ['-o', 'pid=,comm=', '--ppid', String(process.pid)], { reject: false });
  return String(result.stdout)
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter(([, comm]) => comm === 'nix-store' || comm === 'nix-daemon')
    .map(([pid]) => Number(pid));
}

describe('the allow-list of commands', () => {
  it('accepts exactly the three store commands, tolerating whitespace', () => {
    assert.equal(parseStoreCommand('nix-store --serve'), 'nix-store --serve');
    assert.equal(parseStoreCommand('  nix-store   --serve \t--write  '), 'nix-store --serve --write');
    assert.equal(parseStoreCommand('nix-daemon --stdio'), 'nix-daemon --stdio');
  });

  for (const command of [
    '',
    'id',
    'nix-store',
    'nix-store --serve --write --extra',
    'nix-store --serve; id',
    'nix-store --serve && id',
    'nix-store --serve\nid',
    '/usr/bin/nix-store --serve',
    'nix-store --query --requisites /nix/store',
    'nix-daemon',
    'nix-daemon --stdio --extra',
    'sh -c "nix-store --serve"',
    'NIX_REMOTE=x nix-store --serve',
  ]) {
    it(`refuses ${JSON.stringify(command)}`, () => assert.equal(parseStoreCommand(command), undefined));
  }
});

/** A host key other than the coordinator's (ssh2 truncates about 1 in 256 ed25519 keys, so draw until one is whole). */
function otherHostKey(): string {
  for (;;) {
    const line = ssh2.utils.generateKeyPairSync('ed25519').public;
    if (Buffer.from(line.split(' ')[1]!, 'base64').length === 51) return line;
  }
}

describe("the worker's ssh config, as OpenSSH reads it", () => {
  const hostKeyLine = otherHostKey();
  /** `ssh -G` prints the configuration ssh would use, tokens expanded, without connecting. */
  const resolved = (configPath: string): Map<string, string> => {
    const out = execFileSync('ssh', ['-G', '-F', configPath, 'nixfarm-coordinator'], { encoding: 'utf8' });
    return new Map(out.split('\n').map((line) => [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)] as [string, string]));
  };
  const write = (stateDir: string) =>
    writeSshClientConfig({ stateDir, host: '127.0.0.1', port: 2222, hostKeyLine, privateKeyPath: join(stateDir, 'id_ed25519') });

  it('says what it should', async () => {
    const stateDir = join(root, 'plain');
    const config = await write(stateDir);
    const options = resolved(config.configPath);
    assert.equal(options.get('hostname'), '127.0.0.1');
    assert.equal(options.get('port'), '2222');
    assert.equal(options.get('user'), 'nixfarm');
    assert.equal(options.get('identityfile'), join(stateDir, 'id_ed25519'));
    assert.equal(options.get('userknownhostsfile'), config.knownHostsPath);
    assert.equal(options.get('stricthostkeychecking'), 'true');
    assert.equal(options.get('hostkeyalias'), 'nixfarm-coordinator');
    assert.equal(options.get('batchmode'), 'yes');
    assert.equal(options.get('identitiesonly'), 'yes');
    assert.equal(options.get('controlmaster'), 'auto');
    assert.match(options.get('controlpath') ?? '', new RegExp(`^${join(stateDir, 'ssh')}/cm-[0-9a-f]{40}$`));
    assert.equal(config.nixSshOpts, `-F ${config.configPath}`);
    assert.equal(statSync(config.configPath).mode & 0o777, 0o600);
  });

  it('puts the control socket in a short private directory when the state dir is too long for one', async () => {
    const stateDir = join(root, 'a-state-directory-with-a-rather-long-name-like-macos-gives');
    const config = await write(stateDir);
    const controlPath = resolved(config.configPath).get('controlpath') ?? '';
    assert.ok(!controlPath.startsWith(stateDir), controlPath);
    // OpenSSH binds <path>.<16 random characters> first; that must fit macOS's 104-byte sun_path too.
    assert.ok(Buffer.byteLength(controlPath) + 17 < 104, controlPath);
    const dir = controlPath.slice(0, controlPath.lastIndexOf('/'));
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal((await write(stateDir)).controlPath, config.controlPath, 'the same directory on every start');
    rmSync(dir, { recursive: true, force: true });
  });

  it('makes well-formed keys every time, though ssh2 sometimes does not', async () => {
    // 600 keys: ssh2's 1-in-256 truncated key almost surely turns up, and must never reach a key file.
    const dirs = Array.from({ length: 600 }, (_, i) => join(root, 'keys', String(i)));
    const keys = await Promise.all(dirs.map((dir) => loadOrCreateWorkerKey(dir)));
    for (const key of keys) assert.match(key.publicKeyLine, /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI/, 'a 32-byte key');
    const openssh = execFileSync('ssh-keygen', ['-y', '-f', keys[0]!.privateKeyPath], { encoding: 'utf8' });
    assert.equal(openssh.split(' ').slice(0, 2).join(' '), keys[0]!.publicKeyLine.split(' ').slice(0, 2).join(' '));
    // Loading again keeps the key.
    assert.deepEqual(await loadOrCreateWorkerKey(dirs[0]!), keys[0]);
    rmSync(join(root, 'keys'), { recursive: true, force: true });
  });

  it('refuses a state dir that NIX_SSHOPTS cannot carry', async () => {
    await assert.rejects(write(join(root, 'with space')), /whitespace/);
    await assert.rejects(write(join(root, 'with"quote')), /quotes/);
  });
});

describe('the store endpoint, with the OpenSSH client and Nix', { timeout: 300_000 }, () => {
  before(async () => {
    endpoint = new StoreEndpoint({ host: '127.0.0.1', port: 0, stateDir: coordinatorDir, logger, env: NIX_ENV });
    address = await endpoint.start();
    worker = await loadOrCreateWorkerKey(workerDir);
    ssh = await writeSshClientConfig({
      stateDir: workerDir,
      host: address.host,
      port: address.port,
      hostKeyLine: address.hostKey,
      privateKeyPath: worker.privateKeyPath,
    });
    sshConfigs.push(ssh.configPath);
  });

  after(async () => {
    for (const config of sshConfigs) await execa('ssh', ['-F', config, '-O', 'exit', 'nixfarm-coordinator'], { reject: false, timeout: 10_000 });
    await endpoint?.stop();
    if (hostPathsAdded.length > 0) await execa('nix-store', ['--delete', ...hostPathsAdded], { reject: false, env: NIX_ENV });
    // A store's files are read-only.
    if (existsSync(root)) execFileSync('chmod', ['-R', 'u+w', root]);
    rmSync(root, { recursive: true, force: true });
  });

  it('keeps its keys in the state dir, private, in OpenSSH format', () => {
    assert.equal(statSync(join(coordinatorDir, 'ssh_host_ed25519_key')).mode & 0o777, 0o600);
    assert.equal(statSync(worker.privateKeyPath).mode & 0o777, 0o600);
    // OpenSSH reads both private keys and derives the public halves nixfarm reports.
    for (const [path, line] of [
      [join(coordinatorDir, 'ssh_host_ed25519_key'), address.hostKey],
      [worker.privateKeyPath, worker.publicKeyLine],
    ] as const) {
      const derived = execFileSync('ssh-keygen', ['-y', '-f', path], { encoding: 'utf8' }).trim();
      assert.equal(derived.split(' ').slice(0, 2).join(' '), line.split(' ').slice(0, 2).join(' '));
    }
    const keygen = execFileSync('ssh-keygen', ['-l', '-f', `${worker.privateKeyPath}.pub`], { encoding: 'utf8' });
    assert.ok(keygen.includes(worker.fingerprint), keygen);
    assert.equal(readFileSync(ssh.knownHostsPath, 'utf8'), `nixfarm-coordinator ${address.hostKey.split(' ').slice(0, 2).join(' ')}\n`);
  });

  it('refuses a worker key it does not know, saying how to authorise it', async () => {
    const before = endpoint.stats.rejectedAuths;
    await assert.rejects(probe(), (error: unknown) => {
      assert.ok(error instanceof WorkerKeyNotAuthorisedError, String(error));
      assert.equal(error.retryable, false);
      assert.equal(error.code, 'worker-key-not-authorised');
      assert.ok(error.message.includes(worker.fingerprint), error.message);
      assert.ok(error.message.includes('nixfarm authorize'), error.message);
      assert.ok(error.message.includes(`'${worker.publicKeyLine}'`), error.message);
      return true;
    });
    const openssh = await sshClient(ssh.configPath, ['nixfarm-coordinator', 'nix-store', '--serve']);
    assert.equal(openssh.exitCode, 255);
    assert.match(openssh.stderr.toString(), /Permission denied \(publickey\)/);
    assert.ok(endpoint.stats.rejectedAuths > before);

    // The coordinator's log names the key and the exact command for its operator.
    const warning = logged(40).find((entry) => entry.fingerprint === worker.fingerprint);
    assert.ok(warning, 'a warning naming the rejected fingerprint');
    assert.equal(warning.authorizeCommand, `nixfarm authorize --state-dir ${coordinatorDir} '${worker.publicKeyLine.split(' ').slice(0, 2).join(' ')}'`);
    assert.match(String(warning.msg), /nixfarm authorize --state-dir/);
  });

  it('accepts the key once authorised, without a restart', async () => {
    const keys = new AuthorizedKeys(coordinatorDir);
    assert.equal(await keys.add(worker.publicKeyLine), worker.fingerprint);
    assert.equal(await keys.add(`  ${worker.publicKeyLine}  `), worker.fingerprint, 'adding twice is harmless');
    const file = readFileSync(keys.path, 'utf8');
    assert.equal(file.split('\n').filter((line) => line.includes(worker.publicKeyLine.split(' ')[1]!)).length, 1);
    assert.equal(statSync(keys.path).mode & 0o777, 0o600);
    await assert.rejects(keys.add('ssh-ed25519 not-a-key'), /not a usable OpenSSH public key/);

    const result = await probe();
    assert.equal(result.workerKeyFingerprint, worker.fingerprint);
    assert.equal(result.hostKeyFingerprint, address.fingerprint);
    assert.equal(result.serveProtocolVersion >> 8, 2);
  });

  it('skips unusable authorized_keys lines and distrusts a file others may write', async () => {
    const keys = new AuthorizedKeys(coordinatorDir);
    const original = readFileSync(keys.path, 'utf8');
    writeFileSync(keys.path, `# workers\n\ngarbage line\ncommand="id" ${worker.publicKeyLine}\n${original}`);
    await probe();
    assert.ok(logged(40).some((entry) => entry.msg === 'skipping an unusable authorized_keys line' && entry.line === 3));

    chmodSync(keys.path, 0o666);
    await assert.rejects(probe(), WorkerKeyNotAuthorisedError);
    chmodSync(keys.path, 0o600);
    await probe();
  });

  it('works from a state dir with % in its name (ssh expands %-tokens in paths)', async () => {
    const stateDir = join(root, 'w%h%C');
    const key = await loadOrCreateWorkerKey(stateDir);
    await new AuthorizedKeys(coordinatorDir).add(key.publicKeyLine);
    const config = await writeSshClientConfig({
      stateDir,
      host: address.host,
      port: address.port,
      hostKeyLine: address.hostKey,
      privateKeyPath: key.privateKeyPath,
    });
    sshConfigs.push(config.configPath);
    const result = await sshClient(config.configPath, ['nixfarm-coordinator', 'nix-store', '--serve'], SERVE_GREETING);
    assert.equal(result.exitCode, 0, result.stderr);
    assert.ok(
      existsSync(join(stateDir, 'ssh')) && execFileSync('ls', [join(stateDir, 'ssh')], { encoding: 'utf8' }).includes('cm-'),
      'the control socket sits in the literal directory',
    );
  });

  it('serves nix-store --serve, --serve --write and nix-daemon --stdio through OpenSSH, with their exit codes', async () => {
    for (const command of [['nix-store', '--serve'], ['  nix-store   --serve  --write '], ['nix-daemon', '--stdio']]) {
      const greeting = command[0]!.includes('daemon') ? DAEMON_GREETING : SERVE_GREETING;
      const result = await sshClient(ssh.configPath, ['nixfarm-coordinator', ...command], greeting, 16);
      assert.ok(result.stdout.length >= 16, `${command.join(' ')}: ${result.stderr.toString()}`);
      assert.equal(result.stdout.readBigUInt64LE(0), command[0]!.includes('daemon') ? DAEMON_MAGIC_2 : SERVE_MAGIC_2);
      // nix-daemon stops with 1 when the client hangs up mid-handshake; nix-store --serve ends cleanly.
      assert.equal(result.exitCode, command[0]!.includes('daemon') ? 1 : 0, result.stderr.toString());
    }
    // A protocol error is Nix's exit code (1), not ssh's 255: the status is forwarded.
    const garbage = await sshClient(ssh.configPath, ['nixfarm-coordinator', 'nix-store', '--serve'], Buffer.from('garbage!garbage!'));
    assert.equal(garbage.exitCode, 1);
    assert.match(garbage.stderr.toString(), /error/);
  });

  it('refuses every other command, and runs nothing', async () => {
    const marker = join(root, 'marker');
    const before = endpoint.stats.rejectedRequests;
    for (const command of [
      ['id'],
      ['touch', marker],
      ['nix-store', '--serve;', 'touch', marker],
      ['nix-store --serve', '&&', 'touch', marker],
      ['nix-store', '--serve', '--write', '--extra'],
      ['nix-store', '--query', '--requisites', '/nix/store'],
    ]) {
      const result = await sshClient(ssh.configPath, ['nixfarm-coordinator', ...command]);
      assert.notEqual(result.exitCode, 0, command.join(' '));
      assert.equal(result.stdout.length, 0);
    }
    assert.equal(existsSync(marker), false, 'nothing was executed');
    assert.equal(endpoint.stats.rejectedRequests - before, 6);
    assert.ok(logged(40).some((entry) => entry.kind === 'exec' && entry.command === 'id'));
  });

  it('refuses a shell, a pty, sftp and forwarding', async () => {
    const before = endpoint.stats.rejectedRequests;
    const tty = await sshClient(ssh.configPath, ['-tt', 'nixfarm-coordinator']);
    assert.equal(tty.exitCode, 255);
    const shell = await sshClient(ssh.configPath, ['-T', 'nixfarm-coordinator']);
    assert.equal(shell.exitCode, 255);
    const sftp = await sshClient(ssh.configPath, ['-s', 'nixfarm-coordinator', 'sftp']);
    assert.equal(sftp.exitCode, 255);
    // A pty asked for alongside an allowed command is refused; the command still runs, without one.
    const ttyServe = await sshClient(ssh.configPath, ['-tt', 'nixfarm-coordinator', 'nix-store', '--serve'], SERVE_GREETING);
    assert.match(ttyServe.stderr.toString(), /PTY allocation request failed/);
    // Stdio forwarding opens a direct-tcpip channel; the config clears forwardings, so undo that to try.
    const forward = await sshClient(ssh.configPath, ['-S', 'none', '-o', 'ClearAllForwardings=no', '-W', `127.0.0.1:${address.port}`, 'nixfarm-coordinator']);
    assert.equal(forward.exitCode, 255);
    assert.ok(endpoint.stats.rejectedRequests - before >= 6, JSON.stringify(endpoint.stats));
    const kinds = new Set(logged(40).map((entry) => entry.kind));
    for (const kind of ['pty', 'shell', 'sftp', 'tcpip']) assert.ok(kinds.has(kind), `${kind} refusal logged`);
  });

  it('pins the host key: a worker expecting another key will not talk to it', async () => {
    const impostorKey = otherHostKey();
    const otherWorkerDir = join(root, 'w2');
    const other = await writeSshClientConfig({
      stateDir: otherWorkerDir,
      host: address.host,
      port: address.port,
      hostKeyLine: impostorKey,
      privateKeyPath: worker.privateKeyPath,
    });
    sshConfigs.push(other.configPath);
    const result = await sshClient(other.configPath, ['nixfarm-coordinator', 'nix-store', '--serve']);
    assert.equal(result.exitCode, 255);
    assert.match(result.stderr.toString(), /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);

    await assert.rejects(probe({ hostKeyLine: impostorKey }), (error: unknown) => {
      assert.ok(error instanceof HostKeyMismatchError, String(error));
      assert.equal(error.retryable, false);
      assert.equal(error.actualFingerprint, address.fingerprint);
      assert.ok(error.message.includes(address.fingerprint) && error.message.includes(error.expectedFingerprint), error.message);
      return true;
    });
  });

  it('reports an unreachable coordinator as retryable, naming host and port', async () => {
    // A port that was free a moment ago: nothing listens there.
    const closed = await new Promise<number>((resolve) => {
      const server = createServer();
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });
    await assert.rejects(probe({ port: closed }), (error: unknown) => {
      assert.ok(error instanceof CoordinatorUnreachableError, String(error));
      assert.equal(error.retryable, true);
      assert.ok(error.message.includes(`127.0.0.1:${closed}`), error.message);
      return true;
    });
  });

  it('copies closures both ways with nix-copy-closure between two real stores', async () => {
    mkdirSync(namespaceNix, { recursive: true });
    const env = { ...NIX_ENV, NIX_SSHOPTS: ssh.nixSshOpts };
    const fromHost = await addToHostStore('from-host');
    assert.equal((await inNamespace(['nix-store', '--check-validity', fromHost])).exitCode !== 0, true, 'not in the worker store yet');

    const copyIn = await inNamespace(['nix-copy-closure', '--from', 'nixfarm-coordinator', fromHost], env);
    assert.equal(copyIn.exitCode, 0, copyIn.stderr);
    assert.equal((await inNamespace(['nix-store', '--check-validity', fromHost])).exitCode, 0);

    const file = join(root, 'from-worker');
    writeFileSync(file, `built on the worker ${randomBytes(16).toString('hex')}\n`);
    const added = await inNamespace(['nix-store', '--add', file]);
    assert.equal(added.exitCode, 0, added.stderr);
    const fromWorker = added.stdout.trim();
    hostPathsAdded.push(fromWorker);
    assert.equal(await hostValid(fromWorker), false);
    const copyOut = await inNamespace(['nix-copy-closure', '--to', 'nixfarm-coordinator', fromWorker], env);
    assert.equal(copyOut.exitCode, 0, copyOut.stderr);
    assert.equal(await hostValid(fromWorker), true);
  });

  it('multiplexes concurrent copies over one ControlMaster connection', async () => {
    const env = { ...NIX_ENV, NIX_SSHOPTS: ssh.nixSshOpts };
    const check = await execa('ssh', ['-F', ssh.configPath, '-O', 'check', 'nixfarm-coordinator'], { reject: false, timeout: 10_000 });
    assert.equal(check.exitCode, 0, `a master is running: ${check.stderr}`);
    const paths = await Promise.all(Array.from({ length: 6 }, (_, i) => addToHostStore(`concurrent-${i}`)));
    const before = endpoint.stats;
    const copies = await Promise.all(paths.map((path) => inNamespace(['nix-copy-closure', '--from', 'nixfarm-coordinator', path], env)));
    for (const copy of copies) assert.equal(copy.exitCode, 0, copy.stderr);
    const valid = await inNamespace(['nix-store', '--check-validity', ...paths]);
    assert.equal(valid.exitCode, 0, valid.stderr);
    const after = endpoint.stats;
    assert.equal(after.connections, before.connections, 'no new SSH connection: every copy went through the master');
    assert.ok(after.sessions - before.sessions >= paths.length, JSON.stringify({ before, after }));
  });

  it('ends the Nix process when the worker hangs up', async () => {
    await waitFor('earlier sessions to end', async () => (await nixChildren()).length === 0, 10_000);
    const client = execa('ssh', ['-F', ssh.configPath, '-S', 'none', 'nixfarm-coordinator', 'nix-store', '--serve'], {
      reject: false,
      stdin: 'pipe',
      timeout: COMMAND_TIMEOUT_MS,
    });
    await waitFor('a running nix-store --serve', async () => (await nixChildren()).length === 1, 10_000);
    assert.equal(endpoint.stats.activeSessions, 1);
    client.kill('SIGKILL');
    await client;
    await waitFor('nix-store to end', async () => (await nixChildren()).length === 0, 10_000);
    await waitFor('the session to be closed', () => endpoint.stats.activeSessions === 0, 10_000);
  });

  it('keeps its host key across restarts, and stops cleanly', async () => {
    const { fingerprint, hostKey } = address;
    await endpoint.stop();
    await assert.rejects(probe(), CoordinatorUnreachableError);
    endpoint = new StoreEndpoint({ host: '127.0.0.1', port: 0, stateDir: coordinatorDir, logger, env: NIX_ENV });
    address = await endpoint.start();
    assert.equal(address.fingerprint, fingerprint);
    assert.equal(address.hostKey, hostKey);
    await probe();
    await waitFor('the probe to disconnect', () => endpoint.stats.activeConnections === 0, 10_000);
  });
});
