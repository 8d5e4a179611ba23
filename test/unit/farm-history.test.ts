import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FarmHistorySampler, counterDeltas, historySample } from '@nixfarm/coordinator';
import { createLogger, type FarmStatus, type HistorySample } from '@nixfarm/shared';

const status = (at: number, overrides: Partial<FarmStatus> = {}): FarmStatus => ({
  at,
  queues: [
    { name: 'x86_64-linux', system: 'x86_64-linux', features: [], waiting: 3, running: 2, oldestWaitSeconds: 4, liveWorkers: 1 },
    { name: 'x86_64-linux-kvm', system: 'x86_64-linux', features: ['kvm'], waiting: 1, running: 0, oldestWaitSeconds: 1, liveWorkers: 1 },
    { name: 'aarch64-linux', system: 'aarch64-linux', features: [], waiting: 5, running: 0, oldestWaitSeconds: 9, liveWorkers: 1 },
  ],
  workers: [
    { name: 'w1', up: true, systems: ['x86_64-linux'], running: 2, maxJobs: 2, draining: false, heartbeatAgeSeconds: 1 },
    { name: 'w2', up: false, systems: ['x86_64-linux'], running: 0, maxJobs: 2, draining: false, heartbeatAgeSeconds: 60 },
    { name: 'w3', up: true, systems: ['x86_64-linux', 'i686-linux'], running: 0, maxJobs: 1, draining: false, heartbeatAgeSeconds: 2 },
  ],
  scaling: [
    { system: 'aarch64-linux', waiting: 5, freeSlots: 0, unserved: 5, slotsPerWorker: 1, workersNeeded: 5 },
    { system: 'x86_64-linux', waiting: 4, freeSlots: 1, unserved: 3, slotsPerWorker: 2, workersNeeded: 2 },
  ],
  activeRuns: 1,
  evaluating: [],
  ...overrides,
});

describe('farm history sampler', () => {
  it('counts what each counter grew by, reads a decrease as a restart from 0 (as Prometheus does), and leaves out what did not grow', () => {
    const before = new Map([
      ['succeeded', 10],
      ['failed', 2],
      ['aborted', 1],
    ]);
    const after = new Map([
      ['succeeded', 14],
      ['failed', 2],
      ['aborted', 0],
      ['timed-out', 1],
    ]);
    assert.deepEqual(counterDeltas(before, after), { succeeded: 4, 'timed-out': 1 });
    // After a restart the counters start again low: all of each is new.
    assert.deepEqual(counterDeltas(after, new Map([['succeeded', 3]])), { succeeded: 3 });
    assert.deepEqual(counterDeltas(new Map(), new Map([['failed', 0]])), {});
  });

  it('boils a farm status down to queues, workers up and the scaling signal per system', () => {
    assert.deepEqual(historySample(status(1000), { succeeded: 2 }), {
      at: 1000,
      systems: [
        { system: 'aarch64-linux', waiting: 5, running: 0, workersUp: 0, workersNeeded: 5 },
        { system: 'i686-linux', waiting: 0, running: 0, workersUp: 1, workersNeeded: 0 },
        { system: 'x86_64-linux', waiting: 4, running: 2, workersUp: 2, workersNeeded: 2 },
      ],
      workersUp: 2,
      workersRegistered: 3,
      finished: { succeeded: 2 },
    });
  });

  it('appends the builds finished since the sample before; a failed append leaves them for the next sample', async () => {
    const totals = [
      new Map([['succeeded', 2]]),
      new Map([
        ['succeeded', 5],
        ['failed', 1],
      ]),
      new Map([
        ['succeeded', 6],
        ['failed', 1],
      ]),
      // the coordinator's counters restarted
      new Map([['succeeded', 1]]),
    ];
    const appended: HistorySample[] = [];
    let refuse = false;
    let at = 0;
    const sampler = new FarmHistorySampler({
      status: { collect: async () => status((at += 1000)) },
      finishedTotals: async () => totals.shift()!,
      store: {
        append: async (sample) => {
          if (refuse) throw new Error('redis down');
          appended.push(sample);
        },
      },
      intervalSeconds: 10,
      logger: createLogger({ name: 'test', level: 'silent' }),
    });
    await sampler.sample();
    refuse = true;
    await assert.rejects(sampler.sample(), /redis down/);
    refuse = false;
    await sampler.sample();
    await sampler.sample();
    assert.deepEqual(
      appended.map((s) => [s.at, s.finished]),
      [
        [1000, { succeeded: 2 }],
        // the refused sample's 3 succeeded and 1 failed are counted here, with the next one's 1
        [3000, { succeeded: 4, failed: 1 }],
        [4000, { succeeded: 1 }],
      ],
    );
  });
});
