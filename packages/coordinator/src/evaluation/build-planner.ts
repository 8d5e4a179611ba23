import { hashPart, queueNameFor, type BuildJob, type Derivation, type Logger } from '@nixfarm/shared';
import type { CoordinatorNix } from '../nix/coordinator-nix.js';

/**
 * What a run needs of a derivation once it is planned. Its environment,
 * builder and arguments stay behind: the worker reads the .drv itself, and a
 * real derivation's env is often kilobytes, which a plan of 100,000 would
 * hold until the run is registered.
 */
export type PlannedDrv = Pick<Derivation, 'path' | 'name' | 'system' | 'requiredSystemFeatures' | 'preferLocalBuild' | 'inputSrcs'>;

/** One derivation that must be built, with what the graph and the queue need to know about it. */
export interface PlannedDerivation {
  hash: string;
  drv: PlannedDrv;
  /** hash parts of input derivations that must be built too (their outputs are not valid yet) */
  inputs: string[];
  queue: string;
  job: BuildJob;
}

export interface BuildPlan {
  nodes: PlannedDerivation[];
  /** derivations read while walking, including those already built */
  derivationsRead: number;
  /** when the store was first asked which outputs are valid (ms): a build that succeeded after this was not seen */
  checkedAt?: number;
}

export interface BuildPlannerOptions {
  nix: CoordinatorNix;
  logger: Logger;
  /** .drv files read at once */
  readConcurrency?: number;
}

/**
 * What one run's planning has learnt, for the next plan of the same run (a
 * jobset run plans each group of attributes as it comes): a dependency
 * shared by 2,000 attributes is read and checked once, not 2,000 times.
 */
export class PlanMemory {
  /** .drv files read (they never change) */
  readonly derivations = new Map<string, Derivation>();
  /** derivations whose outputs were all valid: outputs held by the run stay valid */
  readonly built = new Set<string>();
  /** derivations an earlier plan gave the run: later plans name them as inputs and do not enter them again */
  readonly planned = new Set<string>();
}

/**
 * Walks the derivation closure from the roots, level by level, and keeps only
 * derivations with an output that is not valid in the coordinator's store. A
 * derivation whose outputs are all valid is not entered: nothing below it needs
 * building for this run. With a PlanMemory, what an earlier plan of the run
 * found is not read, asked about or planned again.
 */
export class BuildPlanner {
  private readonly readConcurrency: number;

  constructor(private readonly options: BuildPlannerOptions) {
    this.readConcurrency = options.readConcurrency ?? 64;
  }

  async plan(rootDrvPaths: readonly string[], memory: PlanMemory = new PlanMemory()): Promise<BuildPlan> {
    const read = memory.derivations;
    const readBefore = read.size;
    const needed = new Map<string, Derivation>();
    const visited = new Set<string>(rootDrvPaths);
    let frontier = [...visited];
    const checkedAt = Date.now();
    while (frontier.length > 0) {
      // known from an earlier plan: built (nothing to do) or in the run already (only an edge to it)
      frontier = frontier.filter((p) => !memory.built.has(p) && !memory.planned.has(p));
      await this.readAll(
        frontier.filter((p) => !read.has(p)),
        read,
      );
      const outputs = frontier.flatMap((p) => Object.values(read.get(p)!.outputs).filter((o) => o !== ''));
      const invalid = outputs.length === 0 ? new Set<string>() : await this.options.nix.invalidPaths(outputs);
      const next = new Set<string>();
      for (const path of frontier) {
        const drv = read.get(path)!;
        const isBuilt = Object.values(drv.outputs).every((o) => o !== '' && !invalid.has(o));
        if (isBuilt) {
          memory.built.add(path);
          continue;
        }
        needed.set(path, drv);
        for (const input of Object.keys(drv.inputDrvs)) {
          if (!visited.has(input)) {
            visited.add(input);
            next.add(input);
          }
        }
      }
      frontier = [...next];
    }

    const nodes: PlannedDerivation[] = [];
    for (const drv of needed.values()) {
      const inputs = Object.keys(drv.inputDrvs)
        .filter((inputPath) => needed.has(inputPath) || memory.planned.has(inputPath))
        .map(hashPart);
      const requirement = { system: drv.system, requiredFeatures: drv.requiredSystemFeatures };
      const { path, name, system, requiredSystemFeatures, preferLocalBuild, inputSrcs } = drv;
      nodes.push({
        hash: hashPart(path),
        drv: { path, name, system, requiredSystemFeatures, preferLocalBuild, inputSrcs },
        inputs,
        queue: queueNameFor(requirement),
        job: buildJobOf(drv, read),
      });
    }
    for (const path of needed.keys()) memory.planned.add(path);
    const derivationsRead = read.size - readBefore;
    this.options.logger.debug({ roots: rootDrvPaths.length, read: derivationsRead, needed: nodes.length }, 'planned build');
    return { nodes, derivationsRead, checkedAt };
  }

  /** The job that builds one derivation, whatever its outputs' validity (a reproducibility check builds a valid one again). */
  async jobFor(drvPath: string): Promise<BuildJob> {
    const drv = await this.options.nix.readDerivation(drvPath);
    const read = new Map<string, Derivation>();
    await this.readAll(Object.keys(drv.inputDrvs), read);
    return buildJobOf(drv, read);
  }

  private async readAll(paths: string[], into: Map<string, Derivation>): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < paths.length) {
        const path = paths[next++]!;
        into.set(path, await this.options.nix.readDerivation(path));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.readConcurrency, paths.length) }, worker));
  }
}

/** What a worker needs to build `drv`: its input sources and the used outputs of its input derivations (all in `inputDrvs`). */
function buildJobOf(drv: Derivation, inputDrvs: ReadonlyMap<string, Derivation>): BuildJob {
  const inputPaths = [...drv.inputSrcs];
  for (const [inputPath, outputNames] of Object.entries(drv.inputDrvs)) {
    const input = inputDrvs.get(inputPath)!;
    for (const name of outputNames) {
      const out = input.outputs[name];
      if (out !== undefined && out !== '') inputPaths.push(out);
    }
  }
  return {
    drvPath: drv.path,
    name: drv.name,
    system: drv.system,
    requiredFeatures: drv.requiredSystemFeatures,
    outputs: drv.outputs,
    inputPaths: [...new Set(inputPaths)].sort(),
  };
}
