import { NIXFARM_BIN, TestFarm } from '../harness/test-farm.js';
import { runIdOf } from '../harness/build-timeline.js';
import type { BenchWay, NixfarmDerivationRow, WayRun } from './bench-way.js';
import { runTimed } from './timed-process.js';
import type { Workload } from './workloads.js';

/**
 * (c) nixfarm: the real coordinator (private redis, host store) and one real
 * worker per simulated machine with --max-jobs J; `nixfarm build` is the
 * client, exactly as a user runs it.
 */
export class NixfarmWay implements BenchWay {
  readonly id = 'c' as const;
  readonly title: string;
  private farm?: TestFarm;

  constructor(private readonly options: { machineNames: readonly string[]; jobsPerMachine: number; timeoutMs: number; coordinatorArgs?: readonly string[] }) {
    const extra = options.coordinatorArgs === undefined || options.coordinatorArgs.length === 0 ? '' : `, coordinator ${options.coordinatorArgs.join(' ')}`;
    this.title = `nixfarm (${options.machineNames.length} workers, --max-jobs ${options.jobsPerMachine} each${extra})`;
  }

  /** The farm of the way, once started: for benches that ask its API between runs. */
  get running(): TestFarm {
    if (this.farm === undefined) throw new Error('NixfarmWay used before start');
    return this.farm;
  }

  async start(): Promise<void> {
    // info, as deployed: the test default (debug) would put the cost of logging into the figures
    this.farm = await TestFarm.start({
      workers: this.options.machineNames.map((name) => ({ name, maxJobs: this.options.jobsPerMachine })),
      logLevel: 'info',
      ...(this.options.coordinatorArgs === undefined ? {} : { coordinatorArgs: this.options.coordinatorArgs }),
    });
  }

  async run(workload: Workload, salt: string, progress: (line: string) => void): Promise<WayRun> {
    const farm = this.farm;
    if (farm === undefined) throw new Error('NixfarmWay.run before start');
    const { fixture } = workload;
    const args = [
      NIXFARM_BIN,
      'build',
      '--coordinator',
      farm.address.httpUrl,
      fixture.file,
      ...fixture.attrs.flatMap((a) => ['-A', a]),
      '--argstr',
      'salt',
      salt,
    ];
    let lastLine = '';
    const heartbeat = setInterval(() => progress(lastLine), 30_000);
    let result;
    try {
      result = await runTimed(process.execPath, args, {
        env: { ...process.env, NIX_CONFIG: 'substituters =', NIXFARM_TOKEN: farm.adminToken },
        timeoutMs: this.options.timeoutMs,
        onLine: (line) => (lastLine = line.text),
      });
    } finally {
      clearInterval(heartbeat);
    }
    const stderr = result.stderrLines.map((l) => l.text).join('\n');
    if (result.exitCode !== 0)
      throw new Error(
        `nixfarm build of ${workload.id} exited with ${result.exitCode ?? result.signal}:\n${stderr.split('\n').slice(-30).join('\n')}\n${farm.diagnostics()}`,
      );
    const runId = runIdOf(stderr);
    const { derivations } = await farm.api<{ derivations: NixfarmDerivationRow[] }>(`/api/runs/${runId}/derivations`);
    const built = derivations.filter((d) => d.status === 'succeeded' && d.startedAt !== undefined && d.finishedAt !== undefined);
    if (derivations.length !== fixture.expectedDrvCount || built.length !== fixture.expectedDrvCount) {
      const statuses = derivations.map((d) => d.status).join(' ');
      throw new Error(
        `nixfarm run ${runId} of ${workload.id}: ${built.length} of ${derivations.length} derivations built by a worker, expected ${fixture.expectedDrvCount} (${statuses.slice(0, 400)})`,
      );
    }
    return {
      makespanMs: result.endedAt - result.startedAt,
      spansMs: built.map((d) => d.finishedAt! - d.startedAt!),
      nixfarmRows: derivations,
    };
  }

  async stop(): Promise<void> {
    await this.farm?.stop();
    this.farm = undefined;
  }
}
