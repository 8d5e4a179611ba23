import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { pino } from 'pino';
import {
  JobsetEvaluation,
  TopLevelListingError,
  attributeResultSchema,
  isFailedAttribute,
  type AttributeResult,
  type EvaluatorPoolEvent,
  type JobsetEvaluationOptions,
} from '@nixfarm/coordinator';
import { jobsetFixture, type JobsetFixture } from '../harness/jobset-fixture.js';
import { freshSalt, nixInstantiate, outputsOf } from '../harness/nix-fixtures.js';

/**
 * A whole jobset evaluated by the coordinator's evaluator pool with real
 * Nix: every attribute gets its own result (a derivation, or Nix's error),
 * one bad attribute never hides another, results stream while evaluation
 * goes on, a killed evaluator changes nothing, and the .drv files are held
 * by GC roots until close().
 */

const quiet = pino({ level: 'silent' });
const MEMORY_MIB = 64;
const SYSTEM = execFileSync('nix-instantiate', ['--eval', '--json', '--expr', 'builtins.currentSystem'], { encoding: 'utf8' }).trim().replaceAll('"', '');

interface Expected {
  drvPath: string;
  name: string;
  outputs: Record<string, string>;
}

function options(fixture: JobsetFixture, salt: string, extra: Partial<JobsetEvaluationOptions> = {}): JobsetEvaluationOptions {
  return {
    source: { file: fixture.file, argstrs: [{ name: 'salt', value: salt }] },
    logger: quiet,
    nixOptions: [['substituters', '']],
    evalWorkers: 2,
    evalMaxMemoryMiB: MEMORY_MIB,
    forceRecurse: true,
    maxBatchSize: 8,
    ...extra,
  };
}

async function evaluateAll(evaluation: JobsetEvaluation, onResult?: (r: AttributeResult) => void): Promise<Map<string, AttributeResult>> {
  const results = new Map<string, AttributeResult>();
  for await (const result of evaluation.results()) {
    attributeResultSchema.parse(result);
    assert.ok(!results.has(result.attr), `${result.attr} has one result, not two`);
    results.set(result.attr, result);
    onResult?.(result);
  }
  return results;
}

/** What plain `nix-instantiate -A` gives for each good attribute: the results must match it exactly. */
async function expectedOf(fixture: JobsetFixture, attrs: readonly string[], salt: string): Promise<Map<string, Expected>> {
  const drvPaths = await nixInstantiate(fixture.file, attrs, { salt });
  const expected = new Map<string, Expected>();
  for (const [i, attr] of attrs.entries()) {
    const drvPath = drvPaths[i]!;
    const name = attr === fixture.multiOutput ? 'jobset-multi' : attr.split('.').at(-1)!;
    expected.set(attr, { drvPath, name, outputs: await outputsOf(drvPath) });
  }
  return expected;
}

function assertGood(results: Map<string, AttributeResult>, expected: Map<string, Expected>): void {
  for (const [attr, want] of expected) {
    const got = results.get(attr);
    assert.ok(got !== undefined, `${attr} has a result`);
    assert.ok(!isFailedAttribute(got), `${attr} evaluated: ${JSON.stringify(got)}`);
    assert.deepEqual(got, { attr, attrPath: attr.split('.'), drvPath: want.drvPath, name: want.name, system: SYSTEM, outputs: want.outputs });
  }
}

function assertFailures(results: Map<string, AttributeResult>, failures: Record<string, string>): void {
  for (const [attr, words] of Object.entries(failures)) {
    const got = results.get(attr);
    assert.ok(got !== undefined && isFailedAttribute(got), `${attr} failed: ${JSON.stringify(got)}`);
    assert.ok(got.error.includes(words), `${attr}'s error has "${words}": ${got.error}`);
    assert.ok(!got.error.includes('\x1b'), `${attr}'s error has no terminal escapes`);
  }
}

describe('jobset evaluation in an evaluator pool', () => {
  const fixture = jobsetFixture({ top: 14, recursed: 15, nested: 10, plain: 10, withFailures: true });
  const salt = freshSalt();
  const good = [...fixture.recursed, ...fixture.plain];
  let expected: Map<string, Expected>;
  let reference: Map<string, AttributeResult>;

  before(async () => {
    assert.equal(good.length, 50);
    expected = await expectedOf(fixture, good, salt);
  });

  it('gives every attribute its exact result, streamed before the evaluation ends, with GC roots held until close()', async () => {
    const order: string[] = [];
    const evaluation = await JobsetEvaluation.open(options(fixture, salt, { onPoolEvent: (e) => e.type === 'finished' && order.push('finished') }));
    let rootsWhileOpen: string[] = [];
    const results = await evaluateAll(evaluation, (r) => {
      order.push('result');
      if (!isFailedAttribute(r) && rootsWhileOpen.length === 0) rootsWhileOpen = readdirSync(evaluation.rootDir);
    });
    assert.deepEqual([...results.keys()].sort(), [...good, ...Object.keys(fixture.failures)].sort());
    assertGood(results, expected);
    assertFailures(results, fixture.failures);
    const memory = results.get('broken.memory');
    assert.ok(memory !== undefined && isFailedAttribute(memory));
    assert.equal(memory.error.split('\n')[0], `evaluation of broken.memory exceeded --eval-max-memory ${MEMORY_MIB} MiB`);
    assert.equal(memory.errorKind, 'out-of-memory');
    assert.equal(results.get('broken.notDerivation')?.attr, 'broken.notDerivation');

    // streaming: the first result came before the last evaluator process ended
    assert.ok(order.indexOf('result') < order.lastIndexOf('finished'), `first result before the last process ended: ${order.join(' ')}`);

    // every .drv is valid and held by a root in the evaluation's directory while it is open
    const drvPaths = good.map((a) => (results.get(a) as { drvPath: string }).drvPath);
    execFileSync('nix-store', ['--check-validity', ...drvPaths]);
    assert.ok(rootsWhileOpen.length > 0, 'roots existed while results came in');
    // a root holds its whole closure: each batch's root holds every .drv of the batch
    const roots = readdirSync(evaluation.rootDir).map((r) => readlinkSync(join(evaluation.rootDir, r)));
    const rooted = new Set(
      execFileSync('nix-store', ['--query', '--requisites', ...roots], { encoding: 'utf8' })
        .trim()
        .split('\n'),
    );
    for (const drvPath of drvPaths) assert.ok(rooted.has(drvPath), `${drvPath} is held by a root`);
    await evaluation.close();
    assert.equal(existsSync(evaluation.rootDir), false, 'the root directory is gone after close()');
    reference = results;
  });

  it('gives the same results when an evaluator is SIGKILLed mid-batch: the batch runs again in a new process', async () => {
    let killed: number | undefined;
    const events: EvaluatorPoolEvent[] = [];
    const evaluation = await JobsetEvaluation.open(
      options(fixture, salt, {
        onPoolEvent: (event) => {
          events.push(event);
          if (event.type === 'spawned' && event.task.kind === 'instantiate' && event.task.attrs.length > 1 && killed === undefined) {
            killed = event.pid;
            process.kill(event.pid, 'SIGKILL');
          }
        },
      }),
    );
    try {
      const results = await evaluateAll(evaluation);
      assert.ok(killed !== undefined, 'an evaluator was killed');
      assert.ok(
        events.some((e) => e.type === 'spawned' && e.attempt === 2),
        'the killed batch ran again',
      );
      assert.deepEqual(Object.fromEntries([...results].sort()), Object.fromEntries([...reference].sort()));
    } finally {
      await evaluation.close();
    }
  });

  it('names the kill in each attribute of a batch whose evaluators are killed every time', async () => {
    const small = jobsetFixture({ top: 3, recursed: 0, nested: 0, plain: 0, withFailures: false });
    const evaluation = await JobsetEvaluation.open(
      options(small, salt, {
        maxRetries: 1,
        maxBatchSize: 10,
        evalWorkers: 1,
        onPoolEvent: (e) => e.type === 'spawned' && e.task.kind === 'instantiate' && process.kill(e.pid, 'SIGKILL'),
      }),
    );
    try {
      const results = await evaluateAll(evaluation);
      assert.deepEqual([...results.keys()].sort(), small.recursed.sort());
      for (const result of results.values()) {
        assert.ok(isFailedAttribute(result), `${result.attr} failed`);
        assert.equal(result.errorKind, 'evaluator-killed');
        assert.match(result.error, /killed by SIGKILL 2 times/);
      }
    } finally {
      await evaluation.close();
    }
  });

  it('without forceRecurse enters only sets with recurseForDerivations, and skips non-derivations when asked to (as nix-eval-jobs does)', async () => {
    const evaluation = await JobsetEvaluation.open(
      options(fixture, salt, {
        forceRecurse: false,
        nonDerivations: 'skip',
        // an expression, not a file: the same value through --expr
        source: { expr: `import ${fixture.file}`, argstrs: [{ name: 'salt', value: salt }] },
      }),
    );
    try {
      const results = await evaluateAll(evaluation);
      const failures = Object.fromEntries(Object.entries(fixture.failures).filter(([attr]) => attr !== 'broken.notDerivation'));
      assert.deepEqual([...results.keys()].sort(), [...fixture.recursed, ...Object.keys(failures)].sort());
      assertGood(results, new Map([...expected].filter(([attr]) => fixture.recursed.includes(attr))));
      assertFailures(results, failures);
    } finally {
      await evaluation.close();
    }
  });

  it("refuses a top value that is not an attribute set as a whole, with Nix's message", async () => {
    const evaluation = await JobsetEvaluation.open(options(fixture, salt, { source: { expr: '42' } }));
    try {
      await assert.rejects(evaluateAll(evaluation), (error: unknown) => error instanceof TopLevelListingError && /attribute set/.test(error.message));
    } finally {
      await evaluation.close();
    }
    assert.equal(existsSync(evaluation.rootDir), false);
  });
});
