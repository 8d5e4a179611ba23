import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { scalingSignal, type CapacityOffer, type WaitingWork } from '@nixfarm/coordinator';

function worker(name: string, overrides: Partial<CapacityOffer> = {}): CapacityOffer {
  return {
    name,
    systems: ['x86_64-linux'],
    supportedFeatures: [],
    mandatoryFeatures: [],
    maxJobs: 4,
    running: 0,
    alive: true,
    takesNewBuilds: true,
    ...overrides,
  };
}

function queue(system: string, waiting: number, requiredFeatures: string[] = []): WaitingWork {
  return { name: requiredFeatures.length === 0 ? `build@${system}` : `build@${system}@${requiredFeatures.join(',')}`, system, requiredFeatures, waiting };
}

function bySystem(
  signal: ReturnType<typeof scalingSignal>,
): Record<string, { waiting: number; freeSlots: number; unserved: number; slotsPerWorker: number; workersNeeded: number }> {
  return Object.fromEntries(signal.map(({ system, ...rest }) => [system, rest]));
}

describe('scaling signal', () => {
  it('needs nothing while free slots of capable workers cover the waiting work', () => {
    const s = bySystem(scalingSignal([queue('x86_64-linux', 3)], [worker('a', { running: 1 })]));
    assert.deepEqual(s['x86_64-linux'], { waiting: 3, freeSlots: 3, unserved: 0, slotsPerWorker: 4, workersNeeded: 0 });
  });

  it('asks for ceil(unserved / median max-jobs) workers when the work exceeds the free slots', () => {
    // 2 free slots (4 - 2); 11 waiting: 9 unserved; median max-jobs of a(4), b(4), c(8) is 4: 3 workers
    const s = bySystem(
      scalingSignal([queue('x86_64-linux', 11)], [worker('a', { running: 2 }), worker('b', { running: 4 }), worker('c', { maxJobs: 8, running: 8 })]),
    );
    assert.equal(s['x86_64-linux']!.unserved, 9);
    assert.equal(s['x86_64-linux']!.slotsPerWorker, 4);
    assert.equal(s['x86_64-linux']!.workersNeeded, 3);
  });

  it('asks for at least one worker for a system no worker serves, sized by the max-jobs of the workers there are', () => {
    const s = bySystem(scalingSignal([queue('aarch64-linux', 5)], [worker('a', { maxJobs: 2 })]));
    assert.deepEqual(s['aarch64-linux'], { waiting: 5, freeSlots: 0, unserved: 5, slotsPerWorker: 2, workersNeeded: 3 });
    assert.equal(s['x86_64-linux']!.workersNeeded, 0, 'the idle system is listed with 0, for scaling down');
    const none = bySystem(scalingSignal([queue('aarch64-linux', 1)], []));
    assert.deepEqual(none['aarch64-linux'], { waiting: 1, freeSlots: 0, unserved: 1, slotsPerWorker: 1, workersNeeded: 1 });
  });

  it('does not count gone, draining or paused workers as capacity, but sizes a new worker by them', () => {
    const s = bySystem(
      scalingSignal(
        [queue('x86_64-linux', 2)],
        [
          worker('gone', { alive: false, maxJobs: 2 }),
          worker('draining', { takesNewBuilds: false, maxJobs: 2 }),
          worker('paused', { takesNewBuilds: false, maxJobs: 2 }),
        ],
      ),
    );
    assert.deepEqual(s['x86_64-linux'], { waiting: 2, freeSlots: 0, unserved: 2, slotsPerWorker: 2, workersNeeded: 1 });
  });

  it("follows Nix's rule for features: a queue needing kvm is not served by a worker without it, nor is plain work by a mandatory-feature worker", () => {
    const s = bySystem(
      scalingSignal(
        [queue('x86_64-linux', 2, ['kvm']), queue('x86_64-linux', 1)],
        [worker('plain', { maxJobs: 4 }), worker('bench', { mandatoryFeatures: ['benchmark'], maxJobs: 4 })],
      ),
    );
    // kvm work: nobody may build it (2 unserved); plain work: the plain worker takes it
    assert.equal(s['x86_64-linux']!.unserved, 2);
    assert.equal(s['x86_64-linux']!.workersNeeded, 1);
  });

  it('counts a slot once when two queues could use it', () => {
    const s = bySystem(
      scalingSignal([queue('x86_64-linux', 3), queue('x86_64-linux', 3, ['big-parallel'])], [worker('a', { supportedFeatures: ['big-parallel'], maxJobs: 4 })]),
    );
    assert.equal(s['x86_64-linux']!.waiting, 6);
    assert.equal(s['x86_64-linux']!.unserved, 2);
    assert.equal(s['x86_64-linux']!.workersNeeded, 1);
  });

  it('lets a multi-system worker serve either system, and builtin work go anywhere', () => {
    const s = bySystem(
      scalingSignal(
        [queue('x86_64-darwin', 1), queue('builtin', 1)],
        [worker('a', { systems: ['x86_64-linux', 'x86_64-darwin'], maxJobs: 1 }), worker('b', { maxJobs: 1 })],
      ),
    );
    assert.equal(s['x86_64-darwin']!.unserved, 0);
    assert.equal(s.builtin!.unserved, 0);
    assert.equal(s['x86_64-darwin']!.workersNeeded + s.builtin!.workersNeeded, 0);
  });
});
