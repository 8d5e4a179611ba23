import { after, before } from 'node:test';
import { TestFarm, type TestFarmOptions } from './test-farm.js';

/** A suite's farm was used outside its tests: before its before hook started it, or after a start that failed. */
class FarmNotStartedError extends Error {
  constructor(what: string) {
    super(`the suite's farm is not started (${what}): use it inside the suite's hooks and tests`);
    this.name = 'FarmNotStartedError';
  }
}

/**
 * The farm of one describe(): started in a before hook and stopped in an
 * after hook that this registers where it is called (hooks run in the order
 * they were registered, so a cleanup that must run before the farm stops is
 * registered before this call). What it returns stands for the started farm:
 * `farm.build(...)` inside a test reaches the TestFarm the hook started.
 */
export function farmForSuite(options: TestFarmOptions): TestFarm {
  let farm: TestFarm | undefined;
  before(async () => {
    farm = await TestFarm.start(options);
  });
  after(async () => {
    await farm?.stop();
  });
  const started = (what: PropertyKey): TestFarm => {
    if (farm === undefined) throw new FarmNotStartedError(String(what));
    return farm;
  };
  // A proxy rather than an accessor function, so that test bodies read as with a TestFarm of their own.
  return new Proxy({} as TestFarm, {
    get(_, key) {
      const target = started(key);
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
    set(_, key, value) {
      return Reflect.set(started(key), key, value);
    },
    has(_, key) {
      return Reflect.has(started(key), key);
    },
  });
}
