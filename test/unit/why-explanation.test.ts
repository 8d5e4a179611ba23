import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidStorePathError, ValidationError } from '@nixfarm/shared';
import { explainDerivation, formatExplanation, judgeWorkers, parseWhyQuery, type NodeFacts } from '@nixfarm/coordinator';
import { DRV, HASH, NOW, nodeFacts, workerFacts } from '../harness/explanation-facts.js';

function node(overrides: Partial<NodeFacts> = {}): NodeFacts {
  return nodeFacts({ queue: 'build@x86_64-linux', ...overrides });
}

const worker = workerFacts;

const input = (name: string, hashChar: string) => `/nix/store/${hashChar.repeat(32)}-${name}.drv`;

describe('nixfarm why: the explanation', () => {
  it('names every worker and why it has not taken a queued build', () => {
    const e = explainDerivation({
      node: node({ requiredFeatures: ['kvm'], queue: 'build@x86_64-linux@kvm' }),
      workers: [
        worker('plain'),
        worker('mac', { systems: ['x86_64-darwin'] }),
        worker('bench', { supportedFeatures: ['kvm'], mandatoryFeatures: ['benchmark'] }),
        worker('kvm-busy', { supportedFeatures: ['kvm'], maxJobs: 2, running: 2 }),
        worker('kvm-gone', { supportedFeatures: ['kvm'], alive: false, heartbeatAt: NOW - 60_000 }),
      ],
      now: NOW,
    });
    const byName = new Map(e.workers!.map((w) => [w.name, w]));
    assert.deepEqual(byName.get('plain'), { name: 'plain', verdict: 'ineligible', reason: 'missing feature: kvm', running: 0, maxJobs: 1, speedFactor: 1 });
    assert.equal(byName.get('mac')!.reason, 'wrong system: needs x86_64-linux, worker has x86_64-darwin');
    assert.equal(byName.get('bench')!.reason, 'worker only takes builds that require benchmark');
    assert.equal(byName.get('kvm-busy')!.verdict, 'busy');
    assert.equal(byName.get('kvm-busy')!.reason, 'busy at 2/2');
    assert.equal(byName.get('kvm-gone')!.verdict, 'gone');
    assert.equal(byName.get('kvm-gone')!.reason, 'gone: no heartbeat for 60 s');
    assert.match(e.summary, /waiting for a free slot: every capable live worker is busy \(kvm-busy 2\/2\)/);
    // capable ones first, the ones that can never take it last
    assert.deepEqual(
      e.workers!.map((w) => w.verdict),
      ['busy', 'gone', 'ineligible', 'ineligible', 'ineligible'],
    );
    const text = formatExplanation(e);
    assert.match(text, /plain\s+ineligible\s+missing feature: kvm/);
    assert.match(text, /status:\s+queued \(ready, waiting for a worker\)/);
  });

  it('says a free eligible worker should take it within seconds and which one the placement rule prefers', () => {
    const e = explainDerivation({
      node: node(),
      workers: [worker('slow', { speedFactor: 1 }), worker('fast', { speedFactor: 4 }), worker('half', { speedFactor: 8, maxJobs: 4, running: 2 })],
      now: NOW,
    });
    assert.deepEqual(
      e.workers!.map((w) => [w.name, w.verdict, w.preferred ?? false]),
      [
        ['fast', 'free', true],
        ['slow', 'free', false],
        ['half', 'free', false],
      ],
      'idle before loaded (0/4 beats 2/8), then the higher speed factor',
    );
    assert.match(e.summary, /fast is eligible and free, so it should be taken within seconds; a faster worker may be preferred/);
    assert.match(e.summary, /lowest load\/speed factor/);
  });

  it('says so when no worker is registered, or none can ever build it', () => {
    const none = explainDerivation({ node: node(), workers: [], now: NOW });
    assert.match(none.summary, /no worker is registered/);
    assert.deepEqual(none.workers, []);
    const never = explainDerivation({ node: node({ system: 'aarch64-linux' }), workers: [worker('a'), worker('b')], now: NOW });
    assert.match(never.summary, /no registered worker can ever build it \(system aarch64-linux, no required features\): a: wrong system/);
  });

  it('says when every capable worker is gone', () => {
    const e = explainDerivation({ node: node(), workers: [worker('a', { alive: false, heartbeatAt: NOW - 20_000 })], now: NOW });
    assert.match(e.summary, /every worker that could build it is gone \(a: gone: no heartbeat for 20 s\)/);
  });

  it('notes a retry that is backing off and jobs waiting ahead', () => {
    const e = explainDerivation({
      node: node({ attempts: 1, error: 'ssh: connection reset' }),
      workers: [worker('a')],
      queue: { name: 'build@x86_64-linux', jobState: 'delayed', delayUntil: NOW + 4000, waiting: 12 },
      now: NOW,
    });
    assert.ok(
      e.notes.some((n) => /backing off for 4 s more \(last error: ssh: connection reset\)/.test(n)),
      e.notes.join('\n'),
    );
    assert.ok(e.notes.includes('12 builds wait in queue build@x86_64-linux'));
    assert.equal(e.queue?.jobState, 'delayed');
  });

  it("says how a queued build's run stands in the fair shares, and nothing for a run alone", () => {
    const explain = (fairShare: NonNullable<NonNullable<Parameters<typeof explainDerivation>[0]['queue']>['fairShare']>) =>
      explainDerivation({
        node: node(),
        workers: [worker('a', { maxJobs: 4, running: 4 })],
        queue: { name: 'build@x86_64-linux', jobState: 'prioritized', waiting: 300, fairShare },
        now: NOW,
      }).notes;
    assert.ok(
      explain({ runId: 'small', boosted: true, claimed: 1, share: 2, runs: 2, slots: 4 }).includes(
        'fair share: run small holds 1 of its fair share of 2 of the 4 slots (2 runs of its priority have builds for this queue); this build was below its share, so it is boosted ahead of the unboosted builds of its priority',
      ),
    );
    assert.ok(
      explain({ runId: 'big', boosted: false, claimed: 3, share: 1.3333, runs: 3, slots: 4 }).some((n) =>
        n.startsWith('fair share: run big holds 3 of its fair share of 1.3 of the 4 slots (3 runs'),
      ),
    );
    assert.ok(!explain({ runId: 'alone', boosted: false, claimed: 4, share: 4, runs: 1, slots: 4 }).some((n) => n.startsWith('fair share')));
  });

  it('lists the inputs a waiting derivation still waits for, nearest to done first', () => {
    const e = explainDerivation({
      node: node({ status: 'waiting', pendingInputs: 3 }),
      inputs: [
        { drvPath: input('libc', 'a'), status: 'succeeded', worker: 'w1' },
        { drvPath: input('zlib', 'b'), status: 'waiting' },
        { drvPath: input('gcc', 'c'), status: 'running', worker: 'w2' },
        { drvPath: input('bash', 'd'), status: 'queued' },
        { drvPath: input('src', 'f') },
      ],
      workers: [],
      now: NOW,
    });
    assert.deepEqual(
      e.waitingFor!.map((i) => [i.name, i.status, i.worker]),
      [
        ['gcc', 'running', 'w2'],
        ['bash', 'queued', undefined],
        ['zlib', 'waiting', undefined],
      ],
    );
    assert.equal(e.summary, 'waiting for 3 inputs to be built: gcc (running on w2), bash (queued), zlib (waiting)');
    assert.equal(e.workers, undefined, 'workers only matter once it is ready');
    assert.match(formatExplanation(e), /Waiting for:\n\s+running\s+\/nix\/store\/c{32}-gcc\.drv on w2/);
  });

  it('falls back to the pending count when the .drv cannot be read', () => {
    const e = explainDerivation({ node: node({ status: 'waiting', pendingInputs: 2 }), workers: [], now: NOW });
    assert.match(e.summary, /^waiting for 2 inputs to be built/);
  });

  it('says where and since when a derivation is building', () => {
    const e = explainDerivation({
      node: node({ status: 'running', worker: 'w2', startedAt: NOW - 42_000, attempts: 2 }),
      workers: [worker('w2', { alive: false, heartbeatAt: NOW - 30_000 })],
      now: NOW,
    });
    assert.deepEqual(e.running, { worker: 'w2', since: NOW - 42_000, seconds: 42, workerAlive: false });
    assert.match(e.summary, /^building on w2 since .* \(42 s\), attempt 2$/);
    assert.ok(e.notes.some((n) => n.includes('no heartbeat for 30 s')));
  });

  it('reports ended derivations with the status, worker, error and log tail', () => {
    const ok = explainDerivation({
      node: node({ status: 'succeeded', worker: 'w1', finishedAt: NOW, outputs: { out: '/nix/store/x' } }),
      workers: [],
      now: NOW,
    });
    assert.match(ok.summary, /^succeeded on w1 at .*: built, outputs valid in the coordinator store$/);
    assert.deepEqual(ok.result, { status: 'succeeded', description: 'built, outputs valid in the coordinator store', worker: 'w1', finishedAt: NOW });
    const failed = explainDerivation({
      node: node({ status: 'failed', worker: 'w1', error: 'builder exited with 3', logTail: ['line 1', 'boom'] }),
      workers: [],
      now: NOW,
    });
    assert.match(failed.summary, /^failed on w1: the builder failed \(builder exited with 3\)$/);
    const text = formatExplanation(failed);
    assert.match(text, /Log tail:\n {2}\| line 1\n {2}\| boom/);
    assert.match(text, /--rebuild-failed/);
  });

  it('shows each worker for an unsupported derivation too', () => {
    const e = explainDerivation({ node: node({ status: 'unsupported', requiredFeatures: ['kvm'] }), workers: [worker('plain')], now: NOW });
    assert.match(e.summary, /^unsupported: no registered worker can build it \(system x86_64-linux, features kvm\): plain: missing feature: kvm$/);
    assert.equal(e.workers![0]!.reason, 'missing feature: kvm');
  });

  it('ranks only free workers by the placement rule', () => {
    const verdicts = judgeWorkers({ system: 'x86_64-linux', requiredFeatures: [] }, [worker('b', { running: 1 }), worker('a', { running: 1 })], NOW);
    assert.deepEqual(
      verdicts.map((v) => [v.name, v.verdict, v.preferred]),
      [
        ['a', 'busy', undefined],
        ['b', 'busy', undefined],
      ],
    );
  });
});

describe('nixfarm why: the argument', () => {
  it('accepts .drv paths, output paths, paths inside a store object and hash prefixes', () => {
    assert.deepEqual(parseWhyQuery(DRV), { kind: 'drv-path', path: DRV, hash: HASH });
    assert.deepEqual(parseWhyQuery(`/nix/store/${HASH}-hello-2.12`), { kind: 'output-path', path: `/nix/store/${HASH}-hello-2.12`, hash: HASH });
    assert.deepEqual(parseWhyQuery(`/nix/store/${HASH}-hello-2.12/bin/hello`), { kind: 'output-path', path: `/nix/store/${HASH}-hello-2.12`, hash: HASH });
    assert.deepEqual(parseWhyQuery(' 0c5x4q '), { kind: 'hash-prefix', prefix: '0c5x4q' });
  });

  it('refuses anything else before it reaches Redis', () => {
    assert.throws(() => parseWhyQuery('/nix/store/short'), InvalidStorePathError);
    assert.throws(() => parseWhyQuery(`/tmp/${HASH}-x.drv`), InvalidStorePathError);
    assert.throws(() => parseWhyQuery('hello'), ValidationError, 'e, o, t, u are not in the hash alphabet');
    assert.throws(() => parseWhyQuery('0c5x*'), ValidationError, 'no glob characters reach SCAN MATCH');
    assert.throws(() => parseWhyQuery(''), ValidationError);
    assert.throws(() => parseWhyQuery('a'.repeat(33)), ValidationError);
  });
});
