import { redisKeys } from '@nixfarm/shared';
import { encodeNode, type GraphNodeSpec } from '../derivation-node.js';
import { REGISTER_NODES_LUA } from '../lua/register-nodes.js';
import { listOf, type GraphOperation, type TaggedReply } from './graph-operation.js';

/** How a run registers its derivations. */
export interface RegistrationOptions {
  priority: number;
  rebuildFailed: boolean;
  criticalPathMs?: Pick<ReadonlyMap<string, number>, 'get'>;
  /** when the planner checked which outputs are valid: a node that succeeded since is built, not rebuilt */
  checkedAt?: number;
  /** the nodes come inputs first already (a PlanOrder's slice): not ordered again */
  ordered?: boolean;
}

export interface RegisterCall {
  runId: string;
  now: string;
  rebuildFailed: boolean;
  /** encodeRegistration's JSON of one chunk of nodes */
  nodes: string;
  checkedAt?: number;
}

/** What one registration call did. */
export interface RegisterReply {
  ready: string[];
  cachedFailures: string[];
  dependencyFailed: string[];
  joined: number;
  /** nodes new to the run */
  added: number;
}

/** The fields a node is registered with, as the scripts write them (encoded by the node codec). */
export function encodeRegistration(nodes: readonly GraphNodeSpec[], options: RegistrationOptions): string {
  return JSON.stringify(
    nodes.map((n) => {
      const criticalPath = options.criticalPathMs?.get(n.hash);
      return {
        hash: n.hash,
        inputs: n.inputs,
        fields: encodeNode({
          path: n.drv.path,
          name: n.drv.name,
          system: n.drv.system,
          features: n.drv.requiredSystemFeatures,
          queue: n.queue,
          job: n.job,
          priority: options.priority,
          preferLocal: n.drv.preferLocalBuild,
          ...(criticalPath === undefined ? {} : { criticalPath }),
        }),
      };
    }),
  );
}

export function decodeRegisterReply(operation: string, reply: TaggedReply): RegisterReply {
  if (reply.kind !== 'ok') throw new Error(`${operation} replied ${reply.kind}`);
  return {
    ready: listOf<string>(reply.ready),
    cachedFailures: listOf<string>(reply.cachedFailures),
    dependencyFailed: listOf<string>(reply.dependencyFailed),
    joined: Number(reply.joined ?? 0),
    added: Number(reply.added ?? 0),
  };
}

export function registerArgs(call: RegisterCall): string[] {
  return [
    redisKeys.run(call.runId),
    redisKeys.runDrvs(call.runId),
    call.runId,
    call.now,
    call.rebuildFailed ? '1' : '0',
    call.nodes,
    call.checkedAt === undefined ? '' : String(call.checkedAt),
  ];
}

/** Registers a chunk of a run's derivations (the run's first registration, while it is open). */
export const registerRunOperation: GraphOperation<RegisterCall, RegisterReply> = {
  name: 'nixfarmRegisterRun',
  numberOfKeys: 2,
  lua: `
--[[
  Registers a chunk of a run's derivations into the graph.
  KEYS[1] the run record (nixfarm:run:<id>)
  KEYS[2] the run's derivations (nixfarm:run:<id>:drvs)
  ARGV[1] run id
  ARGV[2] now (ms)
  ARGV[3] rebuildFailed: '1' or '0'
  ARGV[4] nodes JSON [{hash, inputs: [hash], fields: {node field: value}}], inputs first
  ARGV[5] checkedAt: when the planner saw the outputs invalid ('' if unknown)
  Keys built from data (nixfarm:drv:<hash>...): see registerNodes.
  Returns {kind='ok', ready, cachedFailures, dependencyFailed, joined, added}; adds to the run's remaining and failed.
]]
${REGISTER_NODES_LUA}
local reply = registerNodes(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3] == '1', cjson.decode(ARGV[4]), tonumber(ARGV[5]), false)
return cjson.encode(reply)
`,
  args: registerArgs,
  decode: (reply) => decodeRegisterReply('register-run', reply),
};
