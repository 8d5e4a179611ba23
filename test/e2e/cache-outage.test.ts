import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { outcomeProblems } from '../chaos/chaos-scenario.js';
import { cacheOutageScenario } from '../chaos/scenarios/cache-outage.js';

describe('the --push-to cache down in the middle of a run, then back', () => {
  it('the run is not slowed; its uploads retry and every path lands on the cache exactly once; nothing lost', async () => {
    const outcome = await cacheOutageScenario.run({ size: 'small', progress: (l) => process.stderr.write(`${l}\n`) });
    process.stderr.write(`${JSON.stringify(outcome)}\n`);
    assert.deepEqual(outcomeProblems(cacheOutageScenario, outcome), []);
    assert.equal(outcome.derivations, 14);
  });
});
