import { REDIS_PREFIX, TERMINAL_STATUSES, redisKeys } from '@nixfarm/shared';
import { READY_FIELDS } from '../ready-derivation.js';

/**
 * The constants the Lua operations share with TypeScript, rendered from the
 * TypeScript sources when this module loads, so the two cannot drift:
 * terminal statuses (build-status.ts), the fields a ready node is queued
 * with (ready-derivation.ts), and the key layout (redis-keys.ts).
 */

/** A Lua string literal. */
function luaString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n')}'`;
}

function luaSet(values: readonly string[]): string {
  return `{ ${values.map((v) => `[${luaString(v)}]=true`).join(', ')} }`;
}

const SAMPLE = 'x';
/** The suffix a key adds to its node's or run's key (e.g. ':runs'), read off redisKeys. */
function suffix(longer: string, base: string): string {
  if (!longer.startsWith(base)) throw new Error(`redis key ${longer} does not extend ${base}`);
  return longer.slice(base.length);
}

/** Key parts the scripts build data-dependent keys from (a node's inputs, dependents and runs). */
const LUA_KEY_PARTS = {
  drv: suffix(redisKeys.drv(SAMPLE), '').slice(0, -SAMPLE.length),
  drvRuns: suffix(redisKeys.drvRuns(SAMPLE), redisKeys.drv(SAMPLE)),
  drvDependents: suffix(redisKeys.drvDependents(SAMPLE), redisKeys.drv(SAMPLE)),
  run: redisKeys.run(SAMPLE).slice(0, -SAMPLE.length),
  runDrvs: suffix(redisKeys.runDrvs(SAMPLE), redisKeys.run(SAMPLE)),
} as const;

/**
 * Prepended to every operation: TERMINAL (set of terminal statuses),
 * READY_FIELDS (list), and key builders
 * drvKey(hash), runsKey(hash), dependentsKey(hash), runKey(id).
 */
export const LUA_PREAMBLE = `-- generated from TypeScript by graph/lua/lua-constants.ts (prefix ${REDIS_PREFIX})
local TERMINAL = ${luaSet(TERMINAL_STATUSES)}
local READY_FIELDS = { ${READY_FIELDS.map(luaString).join(', ')} }
local function drvKey(hash) return ${luaString(LUA_KEY_PARTS.drv)} .. hash end
local function runsKey(hash) return drvKey(hash) .. ${luaString(LUA_KEY_PARTS.drvRuns)} end
local function dependentsKey(hash) return drvKey(hash) .. ${luaString(LUA_KEY_PARTS.drvDependents)} end
local function runKey(id) return ${luaString(LUA_KEY_PARTS.run)} .. id end
`;
