import type { ServeSession } from './serve-session.js';

export interface ServePoolOptions {
  start: () => Promise<ServeSession>;
  /** sessions kept open between uses */
  maxIdle: number;
}

/**
 * Long-lived serve sessions to one store, each lent to one user at a time
 * (the protocol is strictly sequential). A session that broke is never
 * handed out again; the next use starts a fresh one.
 */
export class ServePool {
  private readonly idle: ServeSession[] = [];
  private readonly all = new Set<ServeSession>();
  private closed = false;

  constructor(private readonly options: ServePoolOptions) {}

  async use<T>(task: (session: ServeSession) => Promise<T>): Promise<T> {
    const session = await this.acquire();
    try {
      return await task(session);
    } finally {
      this.release(session);
    }
  }

  /**
   * Runs `task` on a session started for it alone (the same command and
   * options as every other), closed before this returns: whatever Nix held
   * for that session, such as temporary GC roots of what it built, is
   * released, so the caller may delete it.
   */
  async once<T>(task: (session: ServeSession) => Promise<T>): Promise<T> {
    if (this.closed) throw new Error('serve pool closed');
    const session = await this.options.start();
    this.all.add(session);
    try {
      return await task(session);
    } finally {
      this.all.delete(session);
      await session.close();
    }
  }

  /** Closes the idle sessions: the next use starts a fresh one, which reads Nix's configuration anew (after nix.conf changed). */
  async discardIdle(): Promise<void> {
    const idle = this.idle.splice(0);
    for (const s of idle) this.all.delete(s);
    await Promise.all(idle.map((s) => s.close()));
  }

  private async acquire(): Promise<ServeSession> {
    if (this.closed) throw new Error('serve pool closed');
    for (;;) {
      const session = this.idle.pop();
      if (session === undefined) break;
      if (!session.broken) return session;
      this.discard(session);
    }
    const session = await this.options.start();
    this.all.add(session);
    return session;
  }

  private release(session: ServeSession): void {
    session.onStderrLine = undefined;
    if (this.closed || session.broken || this.idle.length >= this.options.maxIdle) this.discard(session);
    else this.idle.push(session);
  }

  private discard(session: ServeSession): void {
    this.all.delete(session);
    void session.close();
  }

  /** Closes every session, also those in use (their users see a closed connection). */
  async close(): Promise<void> {
    this.closed = true;
    this.idle.length = 0;
    const sessions = [...this.all];
    this.all.clear();
    await Promise.all(sessions.map((s) => s.close()));
  }
}
