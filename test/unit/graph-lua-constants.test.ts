import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GRAPH_OPERATIONS, LUA_PREAMBLE, NODE_FIELDS, RUN_FIELDS, scriptOf } from '@nixfarm/coordinator';
import { RUN_STATUSES, TERMINAL_STATUSES, isBuildStatus, redisKeys } from '@nixfarm/shared';

// The Lua operations name node fields, run fields and statuses as string literals; these
// checks fail when the Lua and the TypeScript that decodes what it writes drift apart.

/** Each redis.call on a hash: the command, the key expression and the literal arguments after it (null for a non-literal). */
function hashCalls(lua: string): Array<{ command: string; key: string; args: Array<string | null> }> {
  const calls: Array<{ command: string; key: string; args: Array<string | null> }> = [];
  const re = /redis\.call\('(HSET|HGET|HMGET|HDEL|HINCRBY|HEXISTS)',\s*([^,()]+(?:\([^()]*\))?),\s*([^\n]*?)\)\s*(?:$|then|end|or|<=|==|~=|\))/gm;
  for (const m of lua.matchAll(re)) {
    const args = m[3]!.split(/,\s*(?![^{}]*\})/).map((a) => {
      const literal = /^'([^']*)'$/.exec(a.trim());
      return literal === null ? null : literal[1]!;
    });
    calls.push({ command: m[1]!, key: m[2]!.trim(), args });
  }
  return calls;
}

/** Field names a call names: every argument of HMGET and HDEL, the first of HGET and HINCRBY, every other one of HSET. */
function fieldsOf(call: { command: string; args: Array<string | null> }): string[] {
  const { command, args } = call;
  const picked =
    command === 'HSET' ? args.filter((_, i) => i % 2 === 0) : command === 'HGET' || command === 'HINCRBY' || command === 'HEXISTS' ? args.slice(0, 1) : args;
  return picked.filter((f): f is string => f !== null);
}

/** Whether a key expression names a run record: KEYS[n] as the script's header describes it, else by its variable's name. */
function runKeyTest(lua: string): (key: string) => boolean {
  const runKeys = new Set([...lua.matchAll(/^\s*(KEYS\[\d\]) the run record/gm)].map((m) => m[1]!));
  return (key) => (key.startsWith('KEYS[') ? runKeys.has(key) : /run/i.test(key) && !/drv|dep/i.test(key));
}

describe('graph Lua constants', () => {
  it('writes and reads only node fields the codec knows, and run fields the run record knows', () => {
    let checked = 0;
    for (const op of GRAPH_OPERATIONS) {
      const isRunKey = runKeyTest(op.lua);
      for (const call of hashCalls(op.lua)) {
        const known: readonly string[] = isRunKey(call.key) ? RUN_FIELDS : NODE_FIELDS;
        for (const field of fieldsOf(call)) {
          checked++;
          assert.ok(
            known.includes(field),
            `${op.name}: ${call.command} ${call.key} names field ${JSON.stringify(field)}, unknown to the ${isRunKey(call.key) ? 'run record' : 'node codec'}`,
          );
        }
      }
      // Fields set through an args table (args[#args + 1] = 'field'; ...) and a registration's first write.
      for (const m of op.lua.matchAll(/args\[#args \+ 1\] = '([^']+)'; args/g)) {
        checked++;
        assert.ok(NODE_FIELDS.includes(m[1]! as never), `${op.name}: field ${m[1]} unknown to the node codec`);
      }
    }
    assert.ok(checked > 40, `the checker found only ${checked} field names: has the Lua changed shape?`);
  });

  it('writes only statuses TypeScript knows: build statuses on nodes, run statuses on runs', () => {
    let checked = 0;
    for (const op of GRAPH_OPERATIONS) {
      const isRunKey = runKeyTest(op.lua);
      for (const m of op.lua.matchAll(/redis\.call\('HSET',\s*(\w+|KEYS\[\d\]),\s*'status',\s*'([^']+)'/g)) {
        checked++;
        if (isRunKey(m[1]!)) {
          assert.ok((RUN_STATUSES as readonly string[]).includes(m[2]!), `${op.name} writes run status ${m[2]}`);
        } else {
          assert.ok(isBuildStatus(m[2]!), `${op.name} writes build status ${m[2]}`);
        }
      }
      for (const m of op.lua.matchAll(/args = \{ 'status', '([^']+)'/g)) {
        checked++;
        assert.ok(isBuildStatus(m[1]!), `${op.name} registers a node as ${m[1]}`);
      }
    }
    assert.ok(checked >= 10, `the checker found only ${checked} status writes`);
  });

  it('renders the terminal statuses and the key layout from TypeScript', () => {
    for (const status of TERMINAL_STATUSES) assert.ok(LUA_PREAMBLE.includes(`['${status}']=true`), `TERMINAL lacks ${status}`);
    assert.ok(LUA_PREAMBLE.includes(`'${redisKeys.drv('')}'`), 'node keys');
    assert.ok(LUA_PREAMBLE.includes(`'${redisKeys.run('')}'`), 'run keys');
    for (const op of GRAPH_OPERATIONS) {
      assert.ok(scriptOf(op).startsWith(LUA_PREAMBLE), `${op.name} starts with the generated constants`);
      assert.doesNotMatch(op.lua, /local TERMINAL\s*=|'nixfarm:/, `${op.name} holds no hand-copied constant or key`);
      assert.match(op.lua, /KEYS\[1\]/, `${op.name} documents its KEYS`);
      assert.match(op.lua, /Returns/, `${op.name} documents its replies`);
    }
  });
});
