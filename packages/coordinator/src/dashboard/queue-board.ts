import type { FastifyInstance } from 'fastify';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Logger } from '@nixfarm/shared';
import type { BuildQueues } from '../dispatch/build-queues.js';

export interface QueueBoardDeps {
  queues: Pick<BuildQueues, 'names' | 'queue'>;
  logger: Logger;
}

const QUEUE_BOARD_PATH = '/queues';

/**
 * bull-board at /queues: BullMQ's raw view of every build queue, read-only.
 * Retrying, cleaning or removing a job there would go behind the
 * coordinator's graph (a derivation would wait for a job that no longer
 * exists), so the board only shows. Queues appear as the coordinator creates
 * them: the list is brought up to date on each request to the board.
 */
export function registerQueueBoard(app: FastifyInstance, deps: QueueBoardDeps): void {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(QUEUE_BOARD_PATH);
  const board = createBullBoard({
    queues: [],
    serverAdapter,
    options: { uiConfig: { boardTitle: 'nixfarm queues', boardLogo: { path: '/dashboard/logo.svg', width: 24, height: 24 } } },
  });
  const shown = new Set<string>();
  const sync = async (): Promise<void> => {
    for (const name of await deps.queues.names()) {
      if (shown.has(name)) continue;
      shown.add(name);
      board.addQueue(new BullMQAdapter(deps.queues.queue(name) as never, { readOnlyMode: true, description: `builds for ${name}` }));
    }
  };
  void app.register(async (scope) => {
    scope.addHook('onRequest', async () => {
      try {
        await sync();
      } catch (error) {
        // The board still shows the queues it knew; the next request tries again.
        deps.logger.warn({ err: error }, 'could not list the build queues for the queue board');
      }
    });
    // The board's page loads its fonts from Google: on a farm's closed network that fails, and elsewhere it tells Google who looks. System fonts do.
    scope.addHook('onSend', async (_request, reply, payload) =>
      typeof payload === 'string' && String(reply.getHeader('content-type') ?? '').startsWith('text/html')
        ? payload.replace(/<link[^>]*fonts\.googleapis\.com[^>]*>/g, '')
        : payload,
    );
    await scope.register(serverAdapter.registerPlugin(), { prefix: QUEUE_BOARD_PATH });
  });
}
