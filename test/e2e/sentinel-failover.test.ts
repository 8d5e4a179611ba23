import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { outcomeProblems } from '../chaos/chaos-scenario.js';
import { sentinelFailoverScenario } from '../chaos/scenarios/sentinel-failover.js';

describe('the Redis primary SIGKILLed mid-run behind three sentinels', () => {
  it('a replica is promoted, the coordinator, the workers and their queues follow it, the run finishes; nothing lost, nothing built twice differently', async () => {
    const outcome = await sentinelFailoverScenario.run({ size: 'small', progress: (l) => process.stderr.write(`${l}\n`) });
    process.stderr.write(`${JSON.stringify(outcome)}\n`);
    assert.deepEqual(outcomeProblems(sentinelFailoverScenario, outcome), []);
    assert.equal(outcome.derivations, 13);
    assert.match(outcome.notes.join('\n'), /replica promoted in \d+\.\d s/);
    const forced = /(\d+) by themselves after the failover; (\d+) after (\d+) fetch connection\(s\) were frozen/.exec(outcome.notes.join('\n'));
    assert.ok(forced !== null, outcome.notes.join('\n'));
    assert.equal(forced[3], '2', 'both workers had a fetch connection to freeze');
    assert.ok(Number(forced[2]) >= 1, 'a watchdog restarted a frozen fetch loop');
  });
});
