import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { outcomeProblems } from '../chaos/chaos-scenario.js';
import { networkCutScenario } from '../chaos/scenarios/network-cut.js';

describe("a worker's network cut in the middle of a copy", () => {
  it('retries the copy-in and the copy-out with back-off; the run succeeds; no partial path is ever valid', async () => {
    const outcome = await networkCutScenario.run({ size: 'small', progress: (l) => process.stderr.write(`${l}\n`) });
    process.stderr.write(`${JSON.stringify(outcome)}\n`);
    assert.deepEqual(outcomeProblems(networkCutScenario, outcome), []);
    assert.equal(outcome.derivations, 2);
    assert.ok(outcome.notes.some((n) => n.startsWith('copy-in cut')) && outcome.notes.some((n) => n.startsWith('copy-out cut')), outcome.notes.join('; '));
  });
});
