import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { outcomeProblems } from '../chaos/chaos-scenario.js';
import { redisRestartScenario } from '../chaos/scenarios/redis-restart.js';

describe('Redis restarted in the middle of a run (append-only file on)', () => {
  it('the coordinator, the workers and nixfarm build reconnect by themselves; the run finishes; nothing lost', async () => {
    const outcome = await redisRestartScenario.run({ size: 'small', progress: (l) => process.stderr.write(`${l}\n`) });
    process.stderr.write(`${JSON.stringify(outcome)}\n`);
    assert.deepEqual(outcomeProblems(redisRestartScenario, outcome), []);
    assert.equal(outcome.derivations, 13);
  });
});
