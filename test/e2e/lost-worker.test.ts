import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { outcomeProblems } from '../chaos/chaos-scenario.js';
import { workerSigkillScenario } from '../chaos/scenarios/worker-sigkill.js';

describe('a worker lost mid-build (SIGKILL)', () => {
  it('has its builds re-run on another worker within three times the lock time plus a margin, each with one lost attempt, and the run succeeds', async () => {
    const outcome = await workerSigkillScenario.run({ size: 'small', progress: (l) => process.stderr.write(`${l}\n`) });
    process.stderr.write(`${JSON.stringify(outcome)}\n`);
    // recovery bound: 3 × lock + 5 s (lock lapse, then two stalled checks), checked by outcomeProblems
    assert.deepEqual(outcomeProblems(workerSigkillScenario, outcome), []);
    assert.equal(outcome.derivations, 5);
    const attempts = /attempts ([\d,]+)/
      .exec(outcome.notes[0] ?? '')?.[1]
      ?.split(',')
      .map(Number);
    assert.ok(
      attempts !== undefined && attempts.length > 0 && attempts.every((a) => a === 2),
      `one lost attempt and one that finished per killed build: ${outcome.notes[0]}`,
    );
  });
});
