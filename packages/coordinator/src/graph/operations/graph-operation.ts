import type { ChainableCommander, Redis } from 'ioredis';
import { LUA_PREAMBLE } from '../lua/lua-constants.js';

/**
 * One Redis operation on the graph: its Lua (which starts with a header of
 * KEYS, ARGV and replies), how a typed call becomes KEYS and ARGV, and how
 * its reply is decoded. Every script replies one tagged shape,
 * cjson.encode({kind = 'ok', ...}) or {kind = '<why nothing changed>', ...},
 * decoded by decodeReply.
 */
export interface GraphOperation<Args, Reply> {
  /** the ioredis command name */
  readonly name: string;
  /** how many of args() are KEYS (fixed keys; keys that depend on data are built in Lua, see its header) */
  readonly numberOfKeys: number;
  /** the script, without the generated preamble */
  readonly lua: string;
  args(call: Args): string[];
  decode(reply: TaggedReply): Reply;
}

/** What every script returns, JSON-decoded. */
export interface TaggedReply {
  kind: string;
  [field: string]: unknown;
}

/** A script replied something that is not its tagged JSON: a bug, never a state of the graph. */
class GraphReplyError extends Error {
  constructor(operation: string, reply: unknown) {
    super(`graph operation ${operation} replied ${JSON.stringify(reply)?.slice(0, 200)}, not a tagged reply`);
  }
}

function decodeReply(operation: string, raw: unknown): TaggedReply {
  if (typeof raw !== 'string') throw new GraphReplyError(operation, raw);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new GraphReplyError(operation, raw);
  }
  if (parsed === null || typeof parsed !== 'object' || typeof (parsed as { kind?: unknown }).kind !== 'string') throw new GraphReplyError(operation, raw);
  return parsed as TaggedReply;
}

/** A list in a reply: Lua's cjson encodes an empty table as {}, so anything but an array is an empty list. */
export function listOf<T>(value: unknown): T[] {
  return Array.isArray(value) ? (value as T[]) : [];
}

/** A type-erased operation, for the list of every operation. */
// biome-ignore lint/suspicious/noExplicitAny: the list holds operations of every argument type
export type AnyGraphOperation = GraphOperation<any, unknown>;

/** The whole script Redis runs: the generated constants, then the operation. */
export function scriptOf(operation: AnyGraphOperation): string {
  return `${LUA_PREAMBLE}\n${operation.lua}`;
}

export function defineOperations(redis: Redis, operations: readonly AnyGraphOperation[]): void {
  for (const op of operations) redis.defineCommand(op.name, { numberOfKeys: op.numberOfKeys, lua: scriptOf(op) });
}

type Invoke = (...args: string[]) => Promise<unknown>;

/** Runs one operation and decodes its reply. */
export async function runOperation<Args, Reply>(redis: Redis, op: GraphOperation<Args, Reply>, call: Args): Promise<Reply> {
  const invoke = (redis as unknown as Record<string, Invoke>)[op.name]!.bind(redis);
  return op.decode(decodeReply(op.name, await invoke(...op.args(call))));
}

/** Adds one operation to a pipeline; decode its slot of exec()'s result with decodeSlot. */
export function queueOperation<Args>(pipeline: ChainableCommander, op: GraphOperation<Args, unknown>, call: Args): void {
  (pipeline as unknown as Record<string, (...args: string[]) => unknown>)[op.name]!(...op.args(call));
}

export function decodeSlot<Reply>(op: GraphOperation<never, Reply>, slot: [Error | null, unknown] | undefined): Reply {
  const [error, raw] = slot ?? [new Error('no reply from redis'), undefined];
  if (error) throw error;
  return op.decode(decodeReply(op.name, raw));
}
