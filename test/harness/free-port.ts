import { createServer } from 'node:net';

/** A system redis-server may come up on its port at any time: never hand it out. */
const SYSTEM_REDIS_PORT = 6379;

/**
 * A port that was free a moment ago on 127.0.0.1: bind port 0, read the port
 * the kernel chose, close. Racy in principle (for servers that cannot be told
 * to pick one themselves, e.g. sshd and redis-server); callers retry a start.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        const port = typeof address === 'object' && address !== null ? address.port : 0;
        server.close(() => resolve(port));
      });
    });
    if (port !== SYSTEM_REDIS_PORT && port !== 0) return port;
  }
}
