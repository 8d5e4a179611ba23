import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/** A response the handler writes to for as long as the stream lasts. */
export interface OpenStream {
  raw: ServerResponse;
  /** aborts when the client goes away or the coordinator shuts down; the response is ended then */
  closed: AbortSignal;
}

/**
 * The API's long-lived responses (run events, live logs, the dashboard feed).
 * A server waits for every open response before it closes, and these never
 * end by themselves; so at shutdown each is cut here (clients reconnect to
 * the next coordinator), and a stop never hangs on an open browser tab.
 */
export class EventStreams {
  private readonly open = new Set<AbortController>();
  private shuttingDown = false;

  constructor(app: FastifyInstance) {
    app.addHook('preClose', async () => {
      this.shuttingDown = true;
      for (const stream of [...this.open]) stream.abort();
    });
  }

  start(request: FastifyRequest, reply: FastifyReply, headers: Record<string, string>): OpenStream {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, headers);
    const controller = new AbortController();
    this.open.add(controller);
    controller.signal.addEventListener(
      'abort',
      () => {
        this.open.delete(controller);
        // At shutdown the connection is cut, not ended: a plain-text log that ends cleanly means the build ended, and a follower must not take a stop for that.
        if (this.shuttingDown) raw.destroy();
        else raw.end();
      },
      { once: true },
    );
    request.raw.on('close', () => controller.abort());
    return { raw, closed: controller.signal };
  }
}

export const EVENT_STREAM_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' };
