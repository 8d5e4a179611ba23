import { execa } from 'execa';

export interface WorkerNixOptions {
  /** environment for Nix processes */
  env?: Record<string, string>;
}

/**
 * The one Nix command a worker runs as a process of its own; everything
 * else (copies, builds) goes through long-lived serve sessions.
 */
export class WorkerNix {
  constructor(private readonly options: WorkerNixOptions) {}

  async version(): Promise<string> {
    const result = await execa('nix-store', ['--version'], { env: this.options.env, stdin: 'ignore' });
    return String(result.stdout).trim();
  }
}
