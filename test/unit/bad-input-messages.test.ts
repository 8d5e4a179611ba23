import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import {
  InvalidStorePathError,
  buildJobSchema,
  coordinatorConfigSchema,
  formatZodError,
  submitRunRequestSchema,
  workerConfigSchema,
  workerEventSchema,
} from '@nixfarm/shared';
import { parseWhyQuery } from '@nixfarm/coordinator';

/** What a person reads when input is refused: the field, what is allowed, what was given. */

const HASH = '0c0ymkk6hv1dbfz5fk7x8b0c7c3l0zvm';
const OUT = `/nix/store/${HASH}-hello`;
const DRV = `/nix/store/${HASH}-hello.drv`;

function messageOf(schema: z.ZodType, input: unknown, what = 'input'): string {
  const result = schema.safeParse(input, { reportInput: true });
  assert.equal(result.success, false, `expected ${JSON.stringify(input)} to be refused`);
  return formatZodError(result.error!, what);
}

const job = { drvPath: DRV, name: 'hello', system: 'x86_64-linux', requiredFeatures: [], outputs: { out: OUT }, inputPaths: [] };

describe('messages for refused input', () => {
  it('lists every allowed value of an enum, and what was given', () => {
    assert.equal(
      messageOf(coordinatorConfigSchema, { stateDir: '/s', logLevel: 'loud' }, 'coordinator config'),
      'invalid coordinator config:\n  logLevel: expected one of fatal, error, warn, info, debug, trace, silent; got "loud"',
    );
  });

  it('names the bound of a range and the value', () => {
    assert.match(messageOf(coordinatorConfigSchema, { stateDir: '/s', httpPort: 70000 }), /^  httpPort: must be at most 65535; got 70000$/m);
    assert.match(messageOf(workerConfigSchema.shape.maxJobs, 0), /must be at least 1; got 0/);
    assert.match(messageOf(z.number().gt(0), 0), /must be more than 0; got 0/);
    assert.match(messageOf(z.string().max(3), 'abcdef'), /must be at most 3 characters long \(got 6\)/);
    assert.match(messageOf(z.string().min(1), ''), /must not be empty$/m);
    assert.match(messageOf(z.array(z.string()).max(1), ['a', 'b']), /must have at most 1 entries \(got 2\)/);
  });

  it('says which type was expected and which was given, and when a field is missing', () => {
    const text = messageOf(submitRunRequestSchema, { expr: '1', attrs: 'all', priority: '5', rebuildFailed: 1 });
    assert.match(text, /^  attrs: expected a list, got "all" \(a string\)$/m);
    assert.match(text, /^  priority: expected a number, got "5" \(a string\)$/m);
    assert.match(text, /^  rebuildFailed: expected true or false, got 1$/m);
    assert.match(messageOf(z.object({ n: z.number().int() }), { n: 1.5 }), /n: expected a whole number, got 1\.5/);
    assert.match(messageOf(submitRunRequestSchema, { expr: '1', share: 0 }), /^  share: share must be at least 1/m);
    assert.match(messageOf(submitRunRequestSchema, { expr: '1', share: 2.5 }), /^  share: share must be a whole number/m);
    assert.match(messageOf(buildJobSchema, { ...job, name: undefined }), /^  name: missing: give a string$/m);
  });

  it('names unknown fields, suggests the likely one and lists the known ones', () => {
    const text = messageOf(workerConfigSchema, { name: 'w', redisURL: 'redis://x', colour: 1 }, 'worker config');
    assert.match(
      text,
      /^  unknown fields "redisURL" \(did you mean "redisUrl"\?\), "colour"; known fields: name, redisUrl, redisCaFile, redisCertFile, redisKeyFile, coordinatorHost, /m,
    );
    // nested: the parent is named
    assert.match(
      messageOf(submitRunRequestSchema, { expr: '1', args: [{ name: 'a', expr: '1', value: 'x' }] }),
      /^  args\.0: unknown field "value"; known fields: name, expr$/m,
    );
  });

  it('names the kinds of a tagged union (worker events)', () => {
    assert.match(
      messageOf(workerEventSchema, { type: 'exploded', drvPath: DRV }),
      /^  type: expected one of started, finished, handed-back, check-finished; got "exploded"$/m,
    );
    assert.match(messageOf(workerEventSchema, { drvPath: DRV }), /^  type: missing: give one of started, finished, handed-back, check-finished$/m);
  });

  it("keeps a schema's own explanation, adding the rejected value when the input is reported", () => {
    assert.match(
      messageOf(buildJobSchema, { ...job, drvPath: `/nix/store/${HASH}-a;b.drv` }),
      new RegExp(`drvPath: not a valid Nix store path \\(name may only contain .*\\) \\(got "/nix/store/${HASH}-a;b\\.drv"\\)`),
    );
    // without reportInput (zod's default) the value is not repeated
    const quiet = buildJobSchema.safeParse({ ...job, drvPath: '/tmp/x.drv' });
    assert.doesNotMatch(formatZodError(quiet.error!, 'job'), /got/);
  });

  it('cuts long values short and shows control characters escaped', () => {
    const long = messageOf(z.object({ level: z.enum(['a', 'b']) }), { level: 'x'.repeat(500) });
    assert.ok(long.length < 200, long);
    assert.match(long, /… \(502 characters\)/);
    assert.match(messageOf(buildJobSchema, { ...job, drvPath: `/nix/store/${HASH}-a\nb.drv` }), /\(got "\/nix\/store\/\w+-a\\nb\.drv"\)/);
  });
});

describe('store paths with shell characters, traversal or whitespace are refused wherever a path is accepted', () => {
  const bad = [
    `/nix/store/${HASH}-a;rm -rf ~`,
    `/nix/store/${HASH}-$(id)`,
    `/nix/store/${HASH}-\`id\``,
    `/nix/store/${HASH}-a b`,
    `/nix/store/${HASH}-a\nb`,
    `/nix/store/${HASH}-x/../../etc`,
    '/nix/store/../etc/passwd',
    `/nix/store/${HASH}-..`,
  ];

  it('in a build job: drvPath, inputPaths and outputs', () => {
    for (const path of bad) {
      const drv = `${path}.drv`;
      assert.match(messageOf(buildJobSchema, { ...job, drvPath: drv }), /^  drvPath: not a valid Nix store path/m, drv);
      assert.match(messageOf(buildJobSchema, { ...job, inputPaths: [OUT, path] }), /^  inputPaths\.1: not a valid Nix store path/m, path);
      assert.match(messageOf(buildJobSchema, { ...job, outputs: { out: path } }), /^  outputs\.out: not a valid Nix store path/m, path);
    }
  });

  it('in a worker event: drvPath, outputs and NAR hash keys', () => {
    const finished = {
      type: 'finished',
      drvPath: DRV,
      worker: 'w',
      jobId: HASH,
      attempt: 0,
      outcome: 'succeeded',
      outputs: { out: OUT },
      logTail: [],
      timings: { copyInMs: 0, buildMs: 0, copyOutMs: 0, totalMs: 0 },
      at: 0,
    };
    assert.equal(workerEventSchema.safeParse(finished).success, true, 'the well-formed event is accepted');
    for (const path of bad) {
      assert.match(messageOf(workerEventSchema, { ...finished, outputs: { out: path } }), /outputs\.out: not a valid Nix store path/, path);
      assert.match(messageOf(workerEventSchema, { ...finished, drvPath: `${path}.drv` }), /drvPath: not a valid Nix store path/, path);
      assert.match(messageOf(workerEventSchema, { ...finished, narHashes: { [path]: `sha256:${'0'.repeat(52)}` } }), /narHashes/, path);
    }
  });

  it('in `nixfarm why`: the whole argument and the rule are named', () => {
    for (const path of [
      ...bad,
      `/nix/store/${HASH}-hello/bin/../../../etc/passwd`,
      `/nix/store/${HASH}-hello/./bin`,
      `/nix/store/${HASH}-hello/bin/a b`,
      `/nix/store/${HASH}-hello/bin/$(id)`,
    ]) {
      assert.throws(
        () => parseWhyQuery(path),
        (error: unknown) => {
          assert.ok(error instanceof InvalidStorePathError, `${JSON.stringify(path)}: ${String(error)}`);
          assert.ok(error.message.includes(JSON.stringify(path)), `${error.message} names ${JSON.stringify(path)}`);
          return true;
        },
      );
    }
    // A plain path inside a store object still stands for it, with or without a trailing slash.
    assert.equal(parseWhyQuery(`/nix/store/${HASH}-hello/share/doc/README.md`).kind, 'output-path');
    assert.equal(parseWhyQuery(`/nix/store/${HASH}-hello/`).kind, 'output-path');
  });
});
