import { nixBuildSpans } from './nix-activity-log.js';
import { runTimed } from './timed-process.js';
import type { WayRun } from './bench-way.js';
import type { Workload } from './workloads.js';

export interface NixBuildRunOptions {
  /** -j */
  maxJobs: number;
  /** further nix-build arguments (--builders ...) */
  extraArgs?: readonly string[];
  /** added to the environment (NIX_SSHOPTS) */
  env?: NodeJS.ProcessEnv;
  timeoutMs: number;
  progress: (line: string) => void;
}

/**
 * One `nix-build` of a workload on the host store, sandboxed, without
 * substituters, logging internal-json at debug level so that each
 * derivation's span can be read from the log (see nixBuildSpans).
 */
export async function runNixBuild(workload: Workload, salt: string, options: NixBuildRunOptions): Promise<WayRun> {
  const { fixture } = workload;
  const args = [
    fixture.file,
    ...fixture.attrs.flatMap((a) => ['-A', a]),
    '--argstr',
    'salt',
    salt,
    '--no-out-link',
    '-j',
    String(options.maxJobs),
    '--option',
    'sandbox',
    'true',
    '--option',
    'substituters',
    '',
    // no build users, as on the simulated machines: Nix kills every process of the build user it picks, and other
    // stores on this machine (simulated machines of other tests) hand out the same nixbld uids
    '--option',
    'build-users-group',
    '',
    '--log-format',
    'internal-json',
    '-vvv',
    ...(options.extraArgs ?? []),
  ];
  const env: NodeJS.ProcessEnv = { ...process.env, NIX_CONFIG: 'substituters =', ...options.env };
  let built = 0;
  const heartbeat = setInterval(() => options.progress(`${built} of ${fixture.expectedDrvCount} built so far`), 30_000);
  let result;
  try {
    result = await runTimed('nix-build', args, {
      env,
      timeoutMs: options.timeoutMs,
      onLine: (line) => {
        if (line.text.includes('"type":105') && line.text.includes('"action":"start"')) built++;
      },
    });
  } finally {
    clearInterval(heartbeat);
  }
  if (result.exitCode !== 0) {
    const tail = result.stderrLines
      .map((l) => l.text)
      .filter((t) => !t.startsWith('@nix ') || t.includes('"level":0') || t.includes('"level":1'))
      .slice(-30)
      .join('\n');
    throw new Error(`nix-build of ${workload.id} exited with ${result.exitCode ?? result.signal}:\n${tail}`);
  }
  const spans = nixBuildSpans(result.stderrLines);
  const distinct = new Set(spans.map((s) => s.drvPath));
  if (distinct.size !== fixture.expectedDrvCount) {
    throw new Error(`nix-build of ${workload.id} built ${distinct.size} derivations, expected ${fixture.expectedDrvCount} (something was cached or not built)`);
  }
  return { makespanMs: result.endedAt - result.startedAt, spansMs: spans.map((s) => s.stoppedAt - s.triedAt) };
}
