import type { ChaosScenario } from '../chaos-scenario.js';
import { workerSigkillScenario } from './worker-sigkill.js';
import { networkCutScenario } from './network-cut.js';
import { redisRestartScenario } from './redis-restart.js';
import { coordinatorRestartScenario } from './coordinator-restart.js';
import { lostLockScenario } from './lost-lock.js';
import { workerDrainScenario } from './worker-drain.js';
import { diskFloorScenario } from './disk-floor.js';
import { cacheOutageScenario } from './cache-outage.js';
import { sentinelFailoverScenario } from './sentinel-failover.js';

/** Every scenario `npm run chaos` runs, in the order. */
export const CHAOS_SCENARIOS: readonly ChaosScenario[] = [
  workerSigkillScenario,
  networkCutScenario,
  redisRestartScenario,
  coordinatorRestartScenario,
  workerDrainScenario,
  lostLockScenario,
  diskFloorScenario,
  cacheOutageScenario,
  sentinelFailoverScenario,
];
