import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { spawnNixfarm, type CommandResult } from '../harness/test-farm.js';
import { removeTreeSync } from '../harness/process-cleanup.js';

/**
 * An invalid config value stops `nixfarm coordinator` and `nixfarm worker`
 * before they connect to anything: exit 2, and a message naming the field,
 * where its value came from (the flag or the config file), what is allowed
 * and what was given. Nothing here needs a farm: nothing may be reached.
 */

const dir = mkdtempSync(join(tmpdir(), 'nixfarm-config-'));
/** every Redis URL below points here, where nothing listens: a command that got as far as connecting would hang or say so */
const NOWHERE = 'redis://127.0.0.1:1';
const HOST_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8= coordinator';
const WORKER = ['worker', '--redis', NOWHERE, '--coordinator', '127.0.0.1:1', '--host-key', HOST_KEY, '--state-dir', join(dir, 'worker'), '--name', 'w1'];
const COORDINATOR = ['coordinator', '--state-dir', join(dir, 'coordinator'), '--redis', NOWHERE, '--http-port', '0', '--ssh-port', '0'];

function run(args: readonly string[]): Promise<CommandResult> {
  // Far more than a config error takes; a command that went on to wait for Redis is killed and fails the test.
  return spawnNixfarm(args, { timeoutMs: 30_000 }).result;
}

function configFile(name: string, content: string): string {
  const file = join(dir, name);
  writeFileSync(file, content);
  return file;
}

const LEVELS = 'fatal, error, warn, info, debug, trace, silent';

after(() => removeTreeSync(dir));

describe('invalid config values', () => {
  const cases: Array<{ what: string; args: () => string[]; messages: RegExp[] }> = [
    { what: 'worker --max-jobs abc', args: () => [...WORKER, '--max-jobs', 'abc'], messages: [/--max-jobs must be a whole number, got "abc"/] },
    { what: 'worker --max-jobs 0', args: () => [...WORKER, '--max-jobs', '0'], messages: [/maxJobs \(--max-jobs\): must be at least 1; got 0/] },
    {
      what: 'worker --copy-compression zstd',
      args: () => [...WORKER, '--copy-compression', 'zstd'],
      messages: [/copyCompression \(--copy-compression\): must be none or zlib .*not "zstd": zstd is not offered/],
    },
    { what: 'worker --speed-factor fast', args: () => [...WORKER, '--speed-factor', 'fast'], messages: [/--speed-factor must be a number, got "fast"/] },
    {
      what: 'worker --log-level loud',
      args: () => [...WORKER, '--log-level', 'loud'],
      messages: [new RegExp(`logLevel \\(--log-level\\): expected one of ${LEVELS}; got "loud"`)],
    },
    {
      what: 'worker --name with a space',
      args: () => [...WORKER, '--name', 'my worker'],
      messages: [/name \(--name\): a worker name is 1-63 letters, digits and _ \. - .* \(got "my worker"\)/],
    },
    {
      what: 'worker --system with a colon',
      args: () => [...WORKER, '--system', 'x86_64:linux'],
      messages: [/systems\.0 \(--system\): a system is letters, digits and _ \. \+ - .* \(got "x86_64:linux"\)/],
    },
    {
      what: 'worker --redis without a scheme',
      args: () => [...WORKER, '--redis', '127.0.0.1:6379'],
      messages: [
        /redisUrl \(--redis\): a Redis URL starts with redis:\/\/, rediss:\/\/, redis\+sentinel:\/\/ or rediss\+sentinel:\/\/ \(got "127\.0\.0\.1:6379"\)/,
      ],
    },
    {
      what: 'worker --nix-option without =',
      args: () => [...WORKER, '--nix-option', 'sandbox'],
      messages: [/--nix-option takes NAME=VALUE \(like sandbox=true\), got "sandbox"/],
    },
    {
      what: 'worker without --redis',
      args: () => ['worker', '--coordinator', '127.0.0.1:1', '--host-key', HOST_KEY, '--state-dir', join(dir, 'worker')],
      messages: [/redisUrl \(--redis\): missing: give a string/],
    },
    {
      what: 'worker --config with bad and unknown fields',
      args: () => [...WORKER, '--config', configFile('worker.json', JSON.stringify({ maxJobs: '4', logLevel: 'loud', colour: 'red', maxjobs: 4 }))],
      messages: [
        /maxJobs \(in \S+worker\.json\): expected a number, got "4" \(a string\)/,
        new RegExp(`logLevel \\(in \\S+worker\\.json\\): expected one of ${LEVELS}; got "loud"`),
        /in \S+worker\.json: unknown fields "colour", "maxjobs" \(did you mean "maxJobs"\?\); known fields: name, redisUrl, .*logLevel/,
      ],
    },
    {
      what: 'a flag overrides the config file, and the message says which one was wrong',
      args: () => [...WORKER, '--config', configFile('worker-ok.json', JSON.stringify({ maxJobs: 4 })), '--max-jobs', '0'],
      messages: [/maxJobs \(--max-jobs\): must be at least 1; got 0/],
    },
    {
      what: 'worker --config that is not JSON',
      args: () => [...WORKER, '--config', configFile('broken.json', '{ maxJobs: 4')],
      messages: [/config file \S+broken\.json is not valid JSON/],
    },
    {
      what: 'worker --config that is a list',
      args: () => [...WORKER, '--config', configFile('list.json', '[1]')],
      messages: [/config file \S+list\.json must hold a JSON object of settings/],
    },
    {
      what: 'worker --config that does not exist',
      args: () => [...WORKER, '--config', join(dir, 'absent.json')],
      messages: [/cannot read config file \S+absent\.json: ENOENT/],
    },
    {
      what: 'coordinator --http-port 99999',
      args: () => [...COORDINATOR, '--http-port', '99999'],
      messages: [/httpPort \(--http-port\): must be at most 65535; got 99999/],
    },
    { what: 'coordinator --ssh-port -1', args: () => [...COORDINATOR, '--ssh-port', '-1'], messages: [/sshPort \(--ssh-port\): must be at least 0; got -1/] },
    { what: 'coordinator --http-port http', args: () => [...COORDINATOR, '--http-port', 'http'], messages: [/--http-port must be a whole number, got "http"/] },
    {
      what: 'coordinator --redis http://',
      args: () => [...COORDINATOR, '--redis', 'http://127.0.0.1:6379'],
      messages: [
        /redisUrl \(--redis\): a Redis URL starts with redis:\/\/, rediss:\/\/, redis\+sentinel:\/\/ or rediss\+sentinel:\/\/ \(got "http:\/\/127\.0\.0\.1:6379"\)/,
      ],
    },
    {
      what: 'coordinator --log-level loud',
      args: () => [...COORDINATOR, '--log-level', 'loud'],
      messages: [new RegExp(`logLevel \\(--log-level\\): expected one of ${LEVELS}; got "loud"`)],
    },
    {
      what: 'coordinator --nix-option with a bad name',
      args: () => [...COORDINATOR, '--nix-option', 'Bad Option=1'],
      messages: [/nixOptions\.0\.0 \(--nix-option\): a Nix option name is lower-case words joined by -/],
    },
    {
      what: 'coordinator --push-to with an unknown scheme',
      args: () => [...COORDINATOR, '--push-to', 'ftp://cache.example/nix'],
      messages: [/pushTo\.0 \(--push-to\): cache URL "ftp:\/\/cache\.example\/nix" has the scheme ftp, which nixfarm cannot upload to: use file:\/\/\/dir/],
    },
    {
      what: 'coordinator --push-to with credentials in the URL',
      args: () => [...COORDINATOR, '--push-to', 'https://user:s3cret@cache.example/'],
      messages: [/pushTo\.0 \(--push-to\): cache URL "https:\/\/\*\*\*:\*\*\*@cache\.example\/" carries credentials: put them in a netrc file/],
    },
    {
      what: 'coordinator --push-to that does not parse',
      args: () => [...COORDINATOR, '--push-to', 'cache.example'],
      messages: [/pushTo\.0 \(--push-to\): cache URL "cache\.example" does not parse: give one like file:\/\/\/dir/],
    },
    {
      what: 'coordinator --config with a bad port and a misspelt field',
      args: () => [...COORDINATOR, '--config', configFile('coordinator.json', JSON.stringify({ localMaxJobs: '2', redisURL: NOWHERE }))],
      messages: [
        /localMaxJobs \(in \S+coordinator\.json\): expected a number, got "2" \(a string\)/,
        /unknown field "redisURL" \(did you mean "redisUrl"\?\); known fields: stateDir, redisUrl/,
      ],
    },
  ];

  for (const c of cases) {
    it(`${c.what}: exit 2, naming the field and what is allowed`, async () => {
      const result = await run(c.args());
      assert.equal(result.exitCode, 2, `${c.what}: exit ${result.exitCode}\n${result.stderr}`);
      for (const m of c.messages) assert.match(result.stderr, m, result.stderr);
      assert.match(result.stderr, /^nixfarm: /, 'one message, no stack trace');
      assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
      assert.doesNotMatch(result.stderr, /cannot reach Redis/, 'it never got as far as connecting');
      assert.doesNotMatch(result.stderr, /s3cret/, 'a secret given is never repeated');
      assert.equal(result.stdout, '');
    });
  }
});

describe('a --push-to directory the coordinator cannot write', () => {
  it('stops the start before Redis is reached: exit 2, naming the directory, the URL and the fix', async () => {
    // a directory below a file can never be made
    const file = configFile('not-a-dir', '');
    const result = await run([...COORDINATOR, '--push-to', `file://${file}/cache`]);
    assert.equal(result.exitCode, 2, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(`cache directory ${file}/cache \\(from file://${file}/cache\\) cannot be written \\(ENOTDIR\\): create it writable`),
    );
  });
});

describe('bad key lines for `nixfarm authorize`', () => {
  const cases: Array<{ line: string; message: RegExp }> = [
    { line: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8=; touch MARKER', message: /not a usable OpenSSH public key: key data is not base64/ },
    { line: 'ssh-ed25519 $(touch MARKER)', message: /not a usable OpenSSH public key: key data is not base64/ },
    { line: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8=\nssh-ed25519 AAAA', message: /must be a single line/ },
  ];
  for (const c of cases) {
    it(`refuses ${JSON.stringify(c.line.slice(0, 40))}: exit 2, authorized_keys untouched, nothing run`, async () => {
      const state = mkdtempSync(join(dir, 'authorize-'));
      const marker = join(state, 'marker');
      const result = await run(['authorize', '--state-dir', state, c.line.replace('MARKER', marker)]);
      assert.equal(result.exitCode, 2, result.stderr);
      assert.match(result.stderr, /^nixfarm: cannot authorise that key: /);
      assert.match(result.stderr, c.message);
      assert.ok(!existsSync(join(state, 'authorized_keys')), 'no authorized_keys written');
      assert.ok(!existsSync(marker), 'nothing in the line was run');
    });
  }
});
