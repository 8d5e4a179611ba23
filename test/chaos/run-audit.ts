import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { assertDerivationPath, assertStorePath, redisKeys, type BuildFinishedEvent, type DerivationView, type WorkerEvent } from '@nixfarm/shared';
import type { TestFarm } from '../harness/test-farm.js';
import { redisClient } from '../harness/redis-client.js';
import { outputsOf } from '../harness/nix-fixtures.js';
import type { ScenarioOutcome } from './chaos-scenario.js';

const run = promisify(execFile);

export interface RunAudit {
  runId: string;
  status: string;
  derivations: number;
  /** one line per derivation not ended succeeded, or whose outputs are invalid or corrupt in the coordinator's store */
  lost: string[];
  builtTwice: number;
  builtTwiceDifferent: number;
}

/**
 * Checks a run the way an operator would, from outside the coordinator: the
 * run and each derivation succeeded (API), each output is valid in the
 * coordinator's store and its contents still match the NAR hash Nix recorded
 * when it was imported (`nix-store --verify-path`: a half-imported path would
 * fail it), and which derivations were reported built more than once, with
 * which NAR hashes (the worker event stream in Redis).
 */
export async function auditRun(farm: TestFarm, runId: string): Promise<RunAudit> {
  const view = await farm.api<{ status: string }>(`/api/runs/${runId}`);
  const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`);
  const lost: string[] = [];
  const outputs: string[] = [];
  for (const d of derivations) {
    assertDerivationPath(d.drvPath);
    if (d.status !== 'succeeded') lost.push(`${d.drvPath} ended ${d.status}${d.error === undefined ? '' : `: ${d.error}`}`);
    outputs.push(...Object.values(await outputsOf(d.drvPath)));
  }
  if (outputs.length > 0) {
    const invalid = await storeCall(['--check-validity', '--print-invalid', ...outputs]);
    for (const path of invalid.stdout.split('\n').filter((l) => l.length > 0)) lost.push(`${assertStorePath(path)} is not valid in the coordinator's store`);
    const valid = outputs.filter((o) => !invalid.stdout.includes(o));
    if (valid.length > 0) {
      const verified = await storeCall(['--verify-path', ...valid]);
      if (verified.code !== 0) lost.push(`outputs whose contents differ from what Nix registered: ${verified.stderr.trim()}`);
    }
  }
  const { builtTwice, builtTwiceDifferent } = await doubleBuilds(farm, new Set(derivations.map((d) => d.drvPath)));
  return { runId, status: view.status, derivations: derivations.length, lost, builtTwice, builtTwiceDifferent };
}

/** A scenario's outcome from one audited run, with the scenario's own problems (first) and notes. */
export function outcomeOf(audit: RunAudit, extra: { problems?: readonly string[]; recoveredMs: number | undefined; notes: string[] }): ScenarioOutcome {
  const lost = [...(extra.problems ?? []), ...audit.lost];
  if (audit.status !== 'succeeded') lost.unshift(`run ${audit.runId} ended ${audit.status}`);
  return {
    derivations: audit.derivations,
    lost,
    builtTwice: audit.builtTwice,
    builtTwiceDifferent: audit.builtTwiceDifferent,
    recoveredMs: extra.recoveredMs,
    notes: extra.notes,
  };
}

/** Successful reports per derivation, read from the worker event stream (it keeps up to a million reports). */
async function doubleBuilds(farm: TestFarm, drvPaths: ReadonlySet<string>): Promise<{ builtTwice: number; builtTwiceDifferent: number }> {
  const redis = redisClient(farm.redis.url, { maxRetriesPerRequest: 3 });
  try {
    const entries = (await redis.xrange(redisKeys.workerEvents, '-', '+')) as Array<[string, string[]]>;
    const reports = new Map<string, BuildFinishedEvent[]>();
    for (const [, fields] of entries) {
      const event = JSON.parse(fields[1] ?? 'null') as WorkerEvent | null;
      if (event?.type !== 'finished' || event.outcome !== 'succeeded' || !drvPaths.has(event.drvPath)) continue;
      const list = reports.get(event.drvPath) ?? [];
      list.push(event);
      reports.set(event.drvPath, list);
    }
    let builtTwice = 0;
    let builtTwiceDifferent = 0;
    for (const list of reports.values()) {
      if (list.length < 2) continue;
      builtTwice++;
      const hashes = new Set(list.filter((r) => r.narHashes !== undefined).map((r) => JSON.stringify(Object.entries(r.narHashes!).sort())));
      if (hashes.size > 1) builtTwiceDifferent++;
    }
    return { builtTwice, builtTwiceDifferent };
  } finally {
    redis.disconnect();
  }
}

async function storeCall(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('nix-store', args, { maxBuffer: 64 * 1024 * 1024, env: { ...process.env, NIX_CONFIG: 'substituters =' } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(error) };
  }
}
