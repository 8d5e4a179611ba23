import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { WORKER_REDIS_COMMANDS, noPermissionIn, redisAclLine, redisAclRules } from '@nixfarm/shared';
import { NIXFARM_BIN } from '../harness/test-farm.js';

const run = promisify(execFile);
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe('redis-acl: the ACL lines of the coordinator and the worker users', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-redis-acl-unit-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('gives the password only as its SHA-256, and the keys and channels only under nixfarm:', () => {
    const line = redisAclLine({ name: 'w', role: 'worker', password: 'p4ss' }, 'acl-setuser');
    assert.ok(line.startsWith(`ACL SETUSER w reset on #${sha256('p4ss')} resetkeys ~nixfarm:* resetchannels &nixfarm:* -@all +`), line);
    assert.ok(!line.includes('p4ss'));
    assert.equal(
      redisAclLine({ name: 'c', role: 'coordinator', password: 'x' }, 'users-acl'),
      `user c on #${sha256('x')} resetkeys ~nixfarm:* resetchannels &nixfarm:* +@all -@dangerous +info`,
    );
  });

  it("grants a worker each command it needs once, none of Redis's dangerous ones but INFO, and no admin ones", () => {
    const rules = redisAclRules('worker');
    const granted = rules.filter((r) => r.startsWith('+')).map((r) => r.slice(1));
    assert.deepEqual(granted, [...new Set(granted)].sort());
    assert.deepEqual(granted, [...WORKER_REDIS_COMMANDS]);
    for (const needed of ['xadd', 'evalsha', 'eval', 'multi', 'exec', 'subscribe', 'rpoplpush', 'client|setname']) assert.ok(granted.includes(needed), needed);
    for (const never of ['flushall', 'flushdb', 'keys', 'config', 'debug', 'acl', 'monitor', 'shutdown', 'publish', 'script', 'function', '@all'])
      assert.ok(!granted.includes(never), never);
    assert.ok(!rules.some((r) => r.startsWith('~') && r !== '~nixfarm:*'));
  });

  it("maps Redis's refusals to redis-no-permission naming the command, key or script", () => {
    const who = '"w" at redis://w:***@h:6379';
    const command = noPermissionIn(new Error("NOPERM this user has no permissions to run the 'xadd' command"), who);
    assert.equal(command?.code, 'redis-no-permission');
    assert.match(command!.message, /^the Redis user "w" at redis:\/\/w:\*\*\*@h:6379 lacks the command xadd; grant it/);
    assert.match(noPermissionIn(new Error('NOPERM this user has no permissions to access one of the keys used as arguments'), who)!.message, /a key outside/);
    assert.match(
      noPermissionIn(new Error("ERR The user executing the script can't run this command or subcommand script: 03cf, on @user_script:1."), who)!.message,
      /a command inside a BullMQ Lua script/,
    );
    assert.equal(noPermissionIn(new Error('ERR wrong number of arguments'), who), undefined);
  });

  it('nixfarm redis-acl makes missing password files (mode 600), reuses them, and refuses one others can read', async () => {
    const c = join(dir, 'c.pw');
    const w = join(dir, 'w.pw');
    const args = [NIXFARM_BIN, 'redis-acl', '--coordinator-password-file', c, '--worker-password-file', w, '--worker-user', 'builders'];
    const first = await run(process.execPath, args);
    assert.equal(statSync(c).mode & 0o777, 0o600);
    const [coordinatorLine, workerLine] = first.stdout.trim().split('\n');
    assert.match(coordinatorLine!, new RegExp(`^ACL SETUSER nixfarm-coordinator reset on #${sha256(readFileSync(c, 'utf8').trim())} `));
    assert.match(workerLine!, new RegExp(`^ACL SETUSER builders reset on #${sha256(readFileSync(w, 'utf8').trim())} `));
    assert.equal((await run(process.execPath, args)).stdout, first.stdout, 'the same passwords the second time');
    writeFileSync(join(dir, 'loose.pw'), 'secret\n');
    chmodSync(join(dir, 'loose.pw'), 0o644);
    await assert.rejects(run(process.execPath, [...args.slice(0, 3), join(dir, 'loose.pw'), ...args.slice(4)]), (error: { stderr: string; code: number }) => {
      assert.equal(error.code, 2);
      assert.match(error.stderr, /--coordinator-password-file .*loose\.pw: its mode is 644, so group or others can read or write it; chmod 600/);
      return true;
    });
  });
});
