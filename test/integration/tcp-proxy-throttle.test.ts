import assert from 'node:assert/strict';
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { TcpProxy } from '../harness/tcp-proxy.js';

const RATE = 1024 * 1024;

/** A sink and source on 127.0.0.1: counts what arrives, sends `down` bytes to each client. */
async function endpoint(down: number): Promise<{ port: number; received: () => number; close: () => Promise<void> }> {
  let received = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', (chunk: Buffer) => (received += chunk.length));
    socket.on('error', () => undefined);
    // written, not ended: the relay closes both sides when one closes, as a cut link would
    if (down > 0) socket.write(Buffer.alloc(down, 7));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    received: () => received,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe('the test relay throttled to a rate (a slow link)', () => {
  it('carries 2 MiB each way at 1 MiB/s in about two seconds, every byte, in order', async () => {
    const target = await endpoint(2 * RATE);
    const proxy = await TcpProxy.start({ targetPort: target.port, bytesPerSecond: RATE });
    try {
      const started = performance.now();
      const client = createConnection({ host: '127.0.0.1', port: proxy.port });
      let got = 0;
      let intact = true;
      const downDone = new Promise<number>((resolve) => {
        client.on('data', (chunk: Buffer) => {
          got += chunk.length;
          intact &&= chunk.every((b) => b === 7);
          if (got >= 2 * RATE) resolve(performance.now() - started);
        });
      });
      client.write(Buffer.alloc(2 * RATE, 1));
      const downMs = await downDone;
      while (target.received() < 2 * RATE) await new Promise((r) => setTimeout(r, 20));
      const upMs = performance.now() - started;
      client.destroy();
      assert.equal(got, 2 * RATE);
      assert.ok(intact, 'the bytes arrived unchanged');
      // 2 MiB at 1 MiB/s: about 2 s each way (both ways at once), never much faster; slower only on a busy machine
      assert.ok(downMs >= 1900 && downMs < 6000, `down took ${downMs} ms`);
      assert.ok(upMs >= 1900 && upMs < 6000, `up took ${upMs} ms`);
      assert.deepEqual(proxy.bytes, { up: 2 * RATE, down: 2 * RATE });
    } finally {
      await proxy.close();
      await target.close();
    }
  });

  it('refuses a rate that is not positive', async () => {
    await assert.rejects(TcpProxy.start({ targetPort: 1, bytesPerSecond: 0 }), /bytesPerSecond must be positive/);
  });
});
