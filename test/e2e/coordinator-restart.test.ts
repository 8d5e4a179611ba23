import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { outcomeProblems } from '../chaos/chaos-scenario.js';
import { coordinatorRestartScenario } from '../chaos/scenarios/coordinator-restart.js';

describe('the coordinator killed mid-run and started again', () => {
  it('resumes the run from Redis (local builds too); nixfarm build reconnects and exits 0; nixfarm wait follows the run; nothing lost', async () => {
    const outcome = await coordinatorRestartScenario.run({ size: 'small', progress: (l) => process.stderr.write(`${l}\n`) });
    process.stderr.write(`${JSON.stringify(outcome)}\n`);
    assert.deepEqual(outcomeProblems(coordinatorRestartScenario, outcome), []);
    assert.equal(outcome.derivations, 13);
    assert.ok(
      outcome.notes.some((n) => /^[1-9]\d* local build/.test(n)),
      `local builds ran: ${outcome.notes.join('; ')}`,
    );
  });
});
