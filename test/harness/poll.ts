export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls until `probe` gives a value (not undefined or false); throws naming what it waited for. */
export async function pollFor<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  what: () => string,
  intervalMs = 100,
): Promise<T> {
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

/**
 * Waits until `condition` holds, checking every 100 ms; throws naming what it
 * waited for, with `diagnostics()` (e.g. a process's output) after. Unlike
 * pollFor, an error the condition throws is the test's failure, not a retry.
 */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  diagnostics: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      const details = diagnostics();
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${details === '' ? '' : `:\n${details}`}`);
    }
    await sleep(100);
  }
}
