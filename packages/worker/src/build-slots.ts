export interface BuildSlotsOptions {
  maxJobs: number;
  /** writes the worker's advertisement (its heartbeat) now; it reads `advertised` synchronously */
  advertise: () => Promise<void>;
}

interface Slot {
  task: Promise<void> | undefined;
  /** its report is going out: advertised free, still held */
  releasing: boolean;
}

/**
 * The worker's max-jobs build slots, and the load it advertises from them.
 *
 * A build's slot frees only after its report is published and BullMQ has
 * completed its job, but the coordinator may queue the next build on that
 * report before then. So a slot whose report is about to go out is already
 * advertised free (written before the report, hence before any wake-up for
 * the work it releases): other workers reading the registry then yield to this
 * one instead of taking work Nix's rule gives it. The slot itself stays taken
 * until the build's task ends, so the worker never runs more than max-jobs; when
 * it ends, a fetch waiting for a slot goes on at once.
 */
export class BuildSlots {
  /** by BullMQ job id: a job is locked to one holder, so an id runs at most once here */
  private readonly slots = new Map<string, Slot>();
  private freed: (() => void) | undefined;

  constructor(private readonly options: BuildSlotsOptions) {}

  /** slots held, including those whose report is going out: what max-jobs counts */
  get taken(): number {
    return this.slots.size;
  }

  /** the load other workers see (the registry) and placement compares: held slots whose report is not yet going out */
  get advertised(): number {
    let n = 0;
    for (const slot of this.slots.values()) if (!slot.releasing) n++;
    return n;
  }

  get full(): boolean {
    return this.slots.size >= this.options.maxJobs;
  }

  /** Runs one build in a slot; `build` must not reject. When it ends the slot is free: advertised, and a waiting fetch goes on. */
  run(jobId: string, build: () => Promise<void>): void {
    const slot: Slot = { task: undefined, releasing: false };
    // Held before the build starts, so `releasing` always finds it.
    this.slots.set(jobId, slot);
    slot.task = build()
      .catch(() => undefined)
      .finally(() => {
        if (this.slots.get(jobId) === slot) this.slots.delete(jobId);
        void this.advertiseQuietly();
        this.interrupt();
      });
    void this.advertiseQuietly();
  }

  /**
   * The build of `jobId` is over and its report goes out next: advertised free
   * from now on, and written before this returns. Never throws: the
   * advertisement only steers placement; the report must go out regardless.
   */
  async releasing(jobId: string): Promise<void> {
    const slot = this.slots.get(jobId);
    if (slot === undefined || slot.releasing) return;
    slot.releasing = true;
    await this.advertiseQuietly();
  }

  /** Resolves when a slot frees (or `interrupt` is called, e.g. to stop); check `full` again after. */
  async nextFree(): Promise<void> {
    await new Promise<void>((resolve) => {
      const previous = this.freed;
      this.freed = () => {
        previous?.();
        resolve();
      };
    });
  }

  /** Lets a `nextFree` wait go on now. */
  interrupt(): void {
    const freed = this.freed;
    this.freed = undefined;
    freed?.();
  }

  /** Settles when every build running now has ended. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.slots.values()].map((s) => s.task));
  }

  private async advertiseQuietly(): Promise<void> {
    await this.options.advertise().catch(() => undefined);
  }
}
