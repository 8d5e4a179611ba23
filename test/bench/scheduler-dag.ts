import { hashPart, queueNameFor, submitRunRequestSchema, type SubmitRunRequest } from '@nixfarm/shared';
import type { EvaluatedRun, PlannedDerivation, PlannedDrv } from '@nixfarm/coordinator';

/**
 * A synthetic, already planned run for the scheduler bench: what evaluation
 * and planning would hand to RunService, without Nix. Layered like a package
 * set: each derivation takes 2-4 inputs from the few layers below it, some
 * also use outputs built by earlier runs (valid already, so held, not built),
 * every derivation is needed by a later one, and one aggregate on top (like
 * nixpkgs' `tested`) is the run's only result. Store paths are grammatical
 * (32 characters of Nix's base32), so every schema on the way accepts them.
 */
export interface SyntheticDagOptions {
  /** derivations to build, the aggregate included */
  size: number;
  layers?: number;
  seed?: number;
}

export interface SyntheticDag {
  request: SubmitRunRequest;
  evaluated: EvaluatedRun;
  /** edges from inputs to dependents */
  edges: number;
}

const NIX_BASE32 = '0123456789abcdfghijklmnpqrsvwxyz';
const SYSTEM = 'x86_64-linux';
/** one in this many derivations needs a big-parallel machine: a second queue, as in a real farm */
const BIG_PARALLEL_EVERY = 20;

/** mulberry32: a small deterministic generator, so every run of the bench builds the same DAG. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function syntheticDag(options: SyntheticDagOptions): SyntheticDag {
  if (!Number.isInteger(options.size) || options.size < 2) throw new RangeError(`--size must be an integer of at least 2, not ${options.size}`);
  const next = random(options.seed ?? 1);
  const storePath = (name: string) => {
    let hash = '';
    for (let i = 0; i < 32; i++) hash += NIX_BASE32[Math.floor(next() * 32)];
    return `/nix/store/${hash}-${name}`;
  };
  const bootstrap = storePath('bootstrap-tools');
  // Outputs built by earlier runs (valid already, not in the plan): the run must hold the ones its builds use.
  const prebuilt = Array.from({ length: Math.max(1, Math.ceil(options.size / 20)) }, (_, i) => storePath(`lib-${i}`));
  const layers = Math.max(1, Math.min(options.layers ?? 40, options.size - 1));
  const width = Math.ceil((options.size - 1) / layers);
  const levels: PlannedDerivation[][] = [];
  const needed = new Set<string>();
  const nodes: PlannedDerivation[] = [];
  let edges = 0;

  const make = (name: string, inputs: PlannedDerivation[], features: string[]): PlannedDerivation => {
    const drvPath = storePath(`${name}.drv`);
    const out = storePath(name);
    const inputSrcs = [bootstrap];
    // Half the packages bring a source of their own: that many more already-valid paths the run must hold.
    if (next() < 0.5) inputSrcs.push(storePath(`${name}-src`));
    const valid: string[] = [];
    if (next() < 0.3) {
      const lib = prebuilt[Math.floor(next() * prebuilt.length)]!;
      // its .drv path, drawn as before so that the DAG stays the same for every seed
      storePath(`${lib.slice(44)}.drv`);
      valid.push(lib);
    }
    // What the planner keeps of a parsed derivation (PlannedDrv); the synthetic one has no env to leave behind.
    const drv: PlannedDrv = { path: drvPath, name, inputSrcs, system: SYSTEM, requiredSystemFeatures: features, preferLocalBuild: false };
    for (const i of inputs) needed.add(i.hash);
    edges += inputs.length;
    return {
      hash: hashPart(drvPath),
      drv,
      inputs: inputs.map((i) => i.hash),
      queue: queueNameFor({ system: SYSTEM, requiredFeatures: features }),
      job: {
        drvPath,
        name,
        system: SYSTEM,
        requiredFeatures: features,
        outputs: { out },
        inputPaths: [...inputs.map((i) => i.job.outputs.out!), ...valid, ...inputSrcs].sort(),
      },
    };
  };

  for (let level = 0, made = 0; level < layers && made < options.size - 1; level++) {
    const row: PlannedDerivation[] = [];
    for (let j = 0; j < width && made < options.size - 1; j++, made++) {
      const inputs = new Map<string, PlannedDerivation>();
      if (level > 0) {
        // The first input walks the layer below in order, so every derivation there is needed by someone.
        const below = levels[level - 1]!;
        const first = below[j % below.length]!;
        inputs.set(first.hash, first);
        const extra = 1 + Math.floor(next() * 3);
        for (let k = 0; k < extra; k++) {
          const from = levels[Math.max(0, level - 1 - Math.floor(next() * 3))]!;
          const pick = from[Math.floor(next() * from.length)]!;
          inputs.set(pick.hash, pick);
        }
      }
      const features = made % BIG_PARALLEL_EVERY === BIG_PARALLEL_EVERY - 1 ? ['big-parallel'] : [];
      const node = make(`pkg-${level}-${j}`, [...inputs.values()], features);
      row.push(node);
      nodes.push(node);
    }
    levels.push(row);
  }
  const top = make(
    'tested',
    nodes.filter((n) => !needed.has(n.hash)),
    [],
  );
  nodes.push(top);

  const request = submitRunRequestSchema.parse({ expr: '(import ./synthetic-dag.nix { }).tested', attrs: ['tested'] });
  return {
    request,
    evaluated: {
      results: [{ attr: 'tested', drvPath: top.drv.path, outputName: 'out', outputPath: top.job.outputs.out! }],
      plan: { nodes, derivationsRead: nodes.length },
    },
    edges,
  };
}
