import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { z } from 'zod';
import { buildJobSchema, coordinatorConfigSchema, formatZodError, submitRunRequestSchema, workerConfigSchema } from '@nixfarm/shared';

const HASH = '0c0ymkk6hv1dbfz5fk7x8b0c7c3l0zvm';
const OUT = `/nix/store/${HASH}-hello`;
const DRV = `/nix/store/${HASH}-hello.drv`;

/** The distinct paths (dotted) zod names in its issues; '' for top-level issues such as unknown keys. */
function issuePaths(result: { success: boolean; error?: z.ZodError }): string[] {
  assert.equal(result.success, false, 'expected the schema to reject the input');
  return [...new Set(result.error!.issues.map((i) => i.path.join('.')))];
}

const job = {
  drvPath: DRV,
  name: 'hello',
  system: 'x86_64-linux',
  requiredFeatures: ['kvm'],
  outputs: { out: OUT },
  inputPaths: [`/nix/store/${HASH}-busybox`],
};

describe('buildJobSchema', () => {
  it('accepts a well-formed job', () => {
    assert.deepEqual(buildJobSchema.parse(job), job);
    assert.equal(buildJobSchema.parse({ ...job, timeoutSeconds: 60, maxSilentSeconds: 10 }).timeoutSeconds, 60);
  });

  it('rejects bad store paths wherever they are', () => {
    assert.deepEqual(issuePaths(buildJobSchema.safeParse({ ...job, drvPath: '/nix/store/x;rm -rf /.drv' })), ['drvPath']);
    assert.deepEqual(issuePaths(buildJobSchema.safeParse({ ...job, drvPath: OUT })), ['drvPath'], 'not a .drv');
    assert.deepEqual(issuePaths(buildJobSchema.safeParse({ ...job, inputPaths: [OUT, '/nix/store/$(id)'] })), ['inputPaths.1']);
    assert.deepEqual(issuePaths(buildJobSchema.safeParse({ ...job, outputs: { out: '/tmp/out' } })), ['outputs.out']);
    assert.deepEqual(issuePaths(buildJobSchema.safeParse({ ...job, outputs: { 'o:ut': OUT } })), ['outputs.o:ut']);
  });

  it('rejects bad systems and features', () => {
    assert.deepEqual(issuePaths(buildJobSchema.safeParse({ ...job, system: 'x86 linux' })), ['system']);
    assert.deepEqual(issuePaths(buildJobSchema.safeParse({ ...job, requiredFeatures: ['a@b'] })), ['requiredFeatures.0']);
  });

  it('rejects unknown fields and missing ones', () => {
    const unknown = buildJobSchema.safeParse({ ...job, command: 'rm -rf /' });
    assert.equal(unknown.success, false);
    assert.match(unknown.error!.message, /command/);
    assert.ok(issuePaths(buildJobSchema.safeParse({ ...job, drvPath: undefined })).includes('drvPath'));
  });
});

describe('submitRunRequestSchema', () => {
  it('accepts a file or an expression and fills defaults', () => {
    // only the fields this test is about: the schema grows (timeouts, rebuild flags) and each has its own defaults
    const fromFile = submitRunRequestSchema.parse({ file: '/srv/release.nix', attrs: ['all'] });
    assert.equal(fromFile.file, '/srv/release.nix');
    assert.equal(fromFile.expr, undefined);
    assert.deepEqual(fromFile.attrs, ['all']);
    assert.deepEqual([fromFile.args, fromFile.argstrs, fromFile.includes, fromFile.priority], [[], [], [], 0]);
    const parsed = submitRunRequestSchema.parse({ expr: 'import ./x.nix {}', argstrs: [{ name: 'salt', value: 'abc' }] });
    assert.equal(parsed.expr, 'import ./x.nix {}');
    assert.deepEqual(parsed.argstrs, [{ name: 'salt', value: 'abc' }]);
  });

  it('requires exactly one of file and expr', () => {
    for (const body of [{}, { attrs: ['all'] }, { file: '/a.nix', expr: '1' }]) {
      const result = submitRunRequestSchema.safeParse(body);
      assert.equal(result.success, false, JSON.stringify(body));
      assert.match(result.error!.message, /exactly one of file/);
    }
  });

  it('rejects relative file paths', () => {
    for (const file of ['release.nix', './release.nix', '~/release.nix', '']) {
      assert.deepEqual(issuePaths(submitRunRequestSchema.safeParse({ file })), ['file'], file);
    }
  });

  it('rejects unknown fields, bad argument names and out-of-range priorities', () => {
    const unknown = submitRunRequestSchema.safeParse({ file: '/a.nix', shell: 'id' });
    assert.equal(unknown.success, false);
    assert.match(unknown.error!.message, /shell/);
    assert.deepEqual(issuePaths(submitRunRequestSchema.safeParse({ file: '/a.nix', argstrs: [{ name: 'a b', value: 'x' }] })), ['argstrs.0.name']);
    assert.deepEqual(issuePaths(submitRunRequestSchema.safeParse({ file: '/a.nix', args: [{ name: 'x', expr: '1', extra: 1 }] })), ['args.0']);
    assert.deepEqual(issuePaths(submitRunRequestSchema.safeParse({ file: '/a.nix', priority: 1.5 })), ['priority']);
    assert.deepEqual(issuePaths(submitRunRequestSchema.safeParse({ file: '/a.nix', priority: 5000 })), ['priority']);
  });

  it('takes a flake and evalOnly for jobsets only, and a flake without args, file or expr', () => {
    const parsed = submitRunRequestSchema.parse({ flake: '.#hydraJobs', cwd: '/srv/repo', jobset: true, evalOnly: true });
    assert.equal(parsed.flake, '.#hydraJobs');
    assert.equal(parsed.evalOnly, true);
    assert.deepEqual(issuePaths(submitRunRequestSchema.safeParse({ flake: '.#hydraJobs' })), ['jobset']);
    assert.deepEqual(issuePaths(submitRunRequestSchema.safeParse({ file: '/a.nix', evalOnly: true })), ['jobset']);
    const withArgs = submitRunRequestSchema.safeParse({ flake: '.#x', jobset: true, argstrs: [{ name: 'a', value: 'b' }] });
    assert.deepEqual(issuePaths(withArgs), ['flake']);
    assert.match(withArgs.error!.message, /do not apply to a flake/);
    assert.match(submitRunRequestSchema.safeParse({ flake: '.#x', expr: '1', jobset: true }).error!.message, /exactly one of file/);
  });
});

describe('config schemas', () => {
  const worker = {
    name: 'builder-1',
    redisUrl: 'redis://127.0.0.1:6380',
    coordinatorHost: '127.0.0.1',
    coordinatorHostKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8= coordinator',
    stateDir: '/var/lib/nixfarm-worker',
    systems: ['x86_64-linux'],
  };

  it('fills coordinator defaults', () => {
    const config = coordinatorConfigSchema.parse({ stateDir: '/var/lib/nixfarm' });
    assert.equal(config.httpHost, '127.0.0.1');
    assert.equal(config.sshPort, 2222);
    assert.deepEqual(config.nixOptions, []);
  });

  it('fills worker defaults', () => {
    const config = workerConfigSchema.parse(worker);
    assert.equal(config.maxJobs, 1);
    assert.equal(config.speedFactor, 1);
    assert.deepEqual(config.mandatoryFeatures, []);
  });

  it('names the bad coordinator field', () => {
    const cases: Array<[unknown, string]> = [
      [{}, 'stateDir'],
      [{ stateDir: '/s', redisUrl: 'http://127.0.0.1' }, 'redisUrl'],
      [{ stateDir: '/s', httpPort: 70000 }, 'httpPort'],
      [{ stateDir: '/s', nixOptions: [['Bad Option', 'x']] }, 'nixOptions.0.0'],
      [{ stateDir: '/s', logLevel: 'loud' }, 'logLevel'],
    ];
    for (const [input, field] of cases) {
      const result = coordinatorConfigSchema.safeParse(input);
      assert.deepEqual(issuePaths(result), [field], JSON.stringify(input));
      assert.match(formatZodError(result.error!, 'coordinator config'), new RegExp(`^  ${field.replace(/\./g, '\\.')}: `, 'm'));
    }
  });

  it('names an unknown coordinator field', () => {
    const result = coordinatorConfigSchema.safeParse({ stateDir: '/s', redisURL: 'redis://x' });
    assert.equal(result.success, false);
    assert.match(formatZodError(result.error!, 'coordinator config'), /redisURL/);
  });

  it('names the bad worker field', () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ name: 'bad name' }, 'name'],
      [{ name: '-leading-dash' }, 'name'],
      [{ systems: [] }, 'systems'],
      [{ systems: ['x86_64:linux'] }, 'systems.0'],
      [{ supportedFeatures: ['a b'] }, 'supportedFeatures.0'],
      [{ coordinatorHostKey: 'not a key' }, 'coordinatorHostKey'],
      [{ maxJobs: 0 }, 'maxJobs'],
      [{ speedFactor: 0 }, 'speedFactor'],
      [{ redisUrl: '127.0.0.1:6379' }, 'redisUrl'],
    ];
    for (const [change, field] of cases) {
      const result = workerConfigSchema.safeParse({ ...worker, ...change });
      assert.deepEqual(issuePaths(result), [field], JSON.stringify(change));
      const text = formatZodError(result.error!, 'worker config');
      assert.match(text, /^invalid worker config:/);
      assert.ok(text.includes(`  ${field}: `), text);
    }
    const unknown = workerConfigSchema.safeParse({ ...worker, maxjobs: 4 });
    assert.equal(unknown.success, false);
    assert.match(formatZodError(unknown.error!, 'worker config'), /maxjobs/);
  });
});
