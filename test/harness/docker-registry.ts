import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { freePort } from './free-port.js';
import { killGroup, onProcessExit, removeTreeSync, terminateGroup } from './process-cleanup.js';
import { logOutputTo } from './child-log.js';

/** A private Debian docker-registry (distribution) on loopback, plain HTTP, storage in a temp dir. */
export interface TestRegistry {
  port: number;
  /** host:port, as image references name it */
  host: string;
  stop(): Promise<void>;
}

export interface TestRegistryOptions {
  /** require this user (basic auth from an htpasswd file, bcrypt as the registry wants it) */
  user?: { name: string; password: string };
}

/** Starts `docker-registry` with a config of its own on a free loopback port and waits for /v2/ to answer. */
export async function startRegistry(options: TestRegistryOptions = {}): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-registry-'));
  mkdirSync(join(dir, 'data'));
  const port = await freePort();
  const config = join(dir, 'config.yml');
  const auth: string[] = [];
  if (options.user !== undefined) {
    writeFileSync(join(dir, 'htpasswd'), `${options.user.name}:${bcrypt.hashSync(options.user.password, 8)}\n`);
    auth.push('auth:', '  htpasswd:', '    realm: nixfarm-test', `    path: ${join(dir, 'htpasswd')}`);
  }
  writeFileSync(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'data')}`,
      ...auth,
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn('docker-registry', ['serve', config], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  logOutputTo(child, join(dir, 'registry.log'));
  const unregister = onProcessExit(() => {
    killGroup(child.pid, 'SIGKILL');
    removeTreeSync(dir);
  });
  const deadline = Date.now() + 20_000;
  for (;;) {
    // With auth, /v2/ answers 401 once it serves.
    const ok = await fetch(`http://127.0.0.1:${port}/v2/`)
      .then((r) => r.ok || (options.user !== undefined && r.status === 401))
      .catch(() => false);
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      killGroup(child.pid, 'SIGKILL');
      throw new Error(`docker-registry did not answer on 127.0.0.1:${port}:\n${readFileSync(join(dir, 'registry.log'), 'utf8')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    port,
    host: `127.0.0.1:${port}`,
    async stop() {
      await terminateGroup(child);
      removeTreeSync(dir);
      unregister();
    },
  };
}
