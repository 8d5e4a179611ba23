import assert from 'node:assert/strict';
import { describe, it, after } from 'node:test';
import { writeFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { freshSalt, layeredDag } from '../harness/nix-fixtures.js';

const lines: string[] = [];
const users = new Map<string, string>();
let monitor: Redis | undefined;
let admin: Redis | undefined;
let timer: NodeJS.Timeout | undefined;

describe('acl discovery', () => {
  after(() => {
    clearInterval(timer);
    const byUser = new Map<string, Set<string>>();
    let last = '?';
    for (const l of lines) {
      const m = /^[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"(.*)$/.exec(l);
      if (!m) continue;
      const who = m[1] === 'lua' ? last : (users.get(m[1]!) ?? `?${m[1]}`);
      if (m[1] !== 'lua') last = who;
      const cmd = m[2]!.toLowerCase() + (m[1] === 'lua' ? ' (lua)' : '');
      const sub = ['client', 'script', 'config', 'xinfo', 'object', 'acl', 'command'].includes(m[2]!.toLowerCase()) ? ' ' + (/^ "([^"]+)"/.exec(m[3]!)?.[1] ?? '') : '';
      if (!byUser.has(who)) byUser.set(who, new Set());
      byUser.get(who)!.add(cmd + sub.toLowerCase());
    }
    const out = [...byUser].map(([u, s]) => `${u}: ${[...s].sort().join(', ')}`).join('\n');
    writeFileSync('/tmp/acl-discovery.txt', out + '\n');
    writeFileSync('/tmp/acl-monitor.txt', lines.join('\n'));
    monitor?.disconnect();
    admin?.disconnect();
  });
  const farm = farmForSuite({
    workers: [{ name: 'alpha', maxJobs: 2 }, { name: 'beta', maxJobs: 2 }],
    redisUsers: async (redis) => {
      admin = new Redis(redis.url);
      await admin.call('ACL', 'SETUSER', 'nfc', 'on', '>pwc', '~*', '&*', '+@all');
      await admin.call('ACL', 'SETUSER', 'nfw', 'on', '>pww', '~*', '&*', '+@all');
      monitor = new Redis(redis.url);
      monitor.monitor().then((m) => m.on('monitor', (time: string, args: string[], source: string) => lines.push(`${time} [0 ${source}] ${args.map((a) => JSON.stringify(a)).join(' ')}`)));
      timer = setInterval(async () => {
        const list = (await admin!.client('LIST')) as string;
        for (const row of list.split('\n')) {
          const addr = /addr=(\S+)/.exec(row)?.[1];
          const user = /user=(\S+)/.exec(row)?.[1];
          if (addr && user) users.set(addr, user);
        }
      }, 20);
      const port = new URL(redis.url).port;
      return { coordinator: `redis://nfc:pwc@127.0.0.1:${port}`, worker: `redis://nfw:pww@127.0.0.1:${port}` };
    },
  });
  it('builds', async () => {
    const dag = layeredDag({ layers: 3, width: 3 });
    const result = await farm.build([dag.file, ...dag.attrs.flatMap((a) => ['-A', a]), '--argstr', 'salt', freshSalt()]);
    assert.equal(result.exitCode, 0, result.stderr);
    await new Promise((r) => setTimeout(r, 3000));
  });
});
