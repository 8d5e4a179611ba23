import { NixfarmError, type RunResult, type SubmitRunRequest } from '@nixfarm/shared';
import type { BuildPlan, BuildPlanner } from '../evaluation/build-planner.js';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';
import type { GcRoots } from './gc-roots.js';

/** What evaluation and planning produce: the requested results and the derivations to build. */
export interface EvaluatedRun {
  results: RunResult[];
  plan: BuildPlan;
}

export interface RunEvaluationDeps {
  /** evaluation: nix-instantiate and reading .drv files */
  nix: Pick<CoordinatorNix, 'instantiate' | 'readDerivation'>;
  planner: Pick<BuildPlanner, 'plan'>;
  /** where evaluation roots the run's .drv files */
  gcRoots: Pick<GcRoots, 'derivationRootPrefix'>;
}

/** A request's Nix side: evaluates it, finds each result's output path and plans what to build. */
export class RunEvaluation {
  constructor(private readonly deps: RunEvaluationDeps) {}

  async evaluate(request: SubmitRunRequest, runId: string): Promise<EvaluatedRun> {
    const { nix, planner, gcRoots } = this.deps;
    const attrs = await nix.instantiate({ ...request, rootPrefix: gcRoots.derivationRootPrefix(runId) });
    const results: RunResult[] = [];
    for (const a of attrs) {
      const drv = await nix.readDerivation(a.drvPath);
      const outputPath = drv.outputs[a.outputName];
      if (outputPath === undefined || outputPath === '') {
        throw new NixfarmError(
          'unsupported-derivation',
          `${a.drvPath} has no output ${JSON.stringify(a.outputName)} with a known path (content-addressed derivations are not supported yet)`,
        );
      }
      results.push({ attr: a.attr, drvPath: a.drvPath, outputName: a.outputName, outputPath });
    }
    const plan = await planner.plan(attrs.map((a) => a.drvPath));
    return { results, plan };
  }
}
