import type { Redis } from 'ioredis';
import { DerivationGraph, NodeReader, type GraphTransition } from '@nixfarm/coordinator';
import type { BuildStatus, DerivationView } from '@nixfarm/shared';

type StartTransition = Extract<GraphTransition, { type: 'start' }>;

/**
 * The graph with the one-derivation shortcuts only tests use: the coordinator
 * applies starts in batches and reads views of many derivations at once.
 */
export class ProbedGraph extends DerivationGraph {
  private readonly reader: NodeReader;

  constructor(redis: Redis) {
    super(redis);
    this.reader = new NodeReader(redis);
  }

  /** The status as stored (a queued derivation no worker can build is still queued here; its view says unsupported). */
  async status(hash: string): Promise<BuildStatus | undefined> {
    return (await this.reader.read(hash, ['status']))?.status;
  }

  async view(hash: string): Promise<DerivationView | undefined> {
    return (await this.views([hash]))[0];
  }

  async markStarted(hash: string, worker: string, at: number, job?: StartTransition['job']): Promise<boolean> {
    const [started] = await this.apply([{ type: 'start', hash, worker, at, ...(job === undefined ? {} : { job }) }]);
    return started?.applied === true;
  }

  async markUnsupported(hash: string, reason: string): Promise<void> {
    await this.markAllUnsupported([{ hash, reason }]);
  }
}
