/** A queue that producers push into and one consumer reads as an async iterable (of items or of groups); it ends with end() or fail(). */
export class ResultStream<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter: (() => void) | undefined;
  private ended = false;
  private error: unknown;

  push(...items: T[]): void {
    this.items.push(...items);
    this.wake();
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  fail(error: unknown): void {
    this.error = error;
    this.end();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for await (const group of this.groups()) yield* group;
  }

  /** Everything pushed since the last group, as one group: a consumer that works per group takes what came meanwhile at once. */
  async *groups(): AsyncGenerator<T[]> {
    for (;;) {
      if (this.items.length > 0) {
        yield this.items.splice(0);
        continue;
      }
      if (this.ended) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }
}
