import { join } from 'node:path';
import { SshBuilderMachine } from '../harness/ssh-builder-machine.js';
import { SshClientConfig } from '../harness/ssh-client-config.js';
import type { BenchWay, WayRun } from './bench-way.js';
import { runNixBuild } from './nix-build-run.js';
import type { Workload } from './workloads.js';

/**
 * (b) Nix's own remote builds: `nix-build -j0 --builders 'ssh://<machine> ...'`
 * from the host store to simulated machines, each with a real sshd, over SSH
 * with pinned host keys.
 */
export class NixRemoteWay implements BenchWay {
  readonly id = 'b' as const;
  readonly title: string;
  private readonly machines: SshBuilderMachine[] = [];
  private client?: SshClientConfig;

  constructor(private readonly options: { dir: string; machineNames: readonly string[]; jobsPerMachine: number; system: string; timeoutMs: number }) {
    this.title = `nix-build -j0 --builders (${options.machineNames.length} x ssh://, ${options.jobsPerMachine} jobs each)`;
  }

  async start(): Promise<void> {
    const client = new SshClientConfig(join(this.options.dir, 'ssh-client'));
    this.client = client;
    for (const name of this.options.machineNames) {
      this.machines.push(await SshBuilderMachine.start(name, { root: join(this.options.dir, 'machines'), authorizedKey: client.publicKey }));
    }
    client.writeHosts(this.machines.map((m) => ({ alias: m.name, port: m.port, hostPublicKey: m.hostPublicKey })));
  }

  /** The --builders value: `ssh://<alias> <system> - <jobs> 1` per machine (key and host key come from the ssh config). */
  builders(): string {
    return this.machines.map((m) => `ssh://${m.name} ${this.options.system} - ${this.options.jobsPerMachine} 1`).join(' ; ');
  }

  async run(workload: Workload, salt: string, progress: (line: string) => void): Promise<WayRun> {
    if (this.client === undefined) throw new Error('NixRemoteWay.run before start');
    try {
      return await runNixBuild(workload, salt, {
        maxJobs: 0,
        extraArgs: ['--builders', this.builders(), '--option', 'builders-use-substitutes', 'false'],
        env: { NIX_SSHOPTS: this.client.nixSshOpts() },
        timeoutMs: this.options.timeoutMs,
        progress,
      });
    } catch (error) {
      const logs = this.machines.map((m) => `--- sshd of ${m.name} ---\n${m.logTail(10)}`).join('\n');
      throw new Error(`${error instanceof Error ? error.message : String(error)}\n${logs}`);
    }
  }

  async stop(): Promise<void> {
    for (const m of this.machines.splice(0)) await m.destroy();
  }
}
