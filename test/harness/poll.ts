import { sleep } from './test-farm.js';

/** Polls until `probe` gives a value (not undefined or false); throws naming what it waited for. */
export async function pollFor<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, what: () => string, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let value: T | undefined | false;
    try {
      value = await probe();
    } catch {
      value = undefined; // e.g. a listing read while the coordinator is busy
    }
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
    await sleep(intervalMs);
  }
}
