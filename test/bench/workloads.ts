import { chain, layeredDag, type Fixture } from '../harness/nix-fixtures.js';
import { cpuBoundFixture } from './cpu-bound-fixture.js';

export type WorkloadId = 'dag-500' | 'dag-50' | 'cpu-40' | 'chain-100';
export const WORKLOAD_IDS: readonly WorkloadId[] = ['dag-500', 'dag-50', 'cpu-40', 'chain-100'];

/** One workload of the bench: a fixture file and the attributes every way builds. */
export interface Workload {
  id: WorkloadId;
  description: string;
  fixture: Fixture;
}

export interface WorkloadSizes {
  /** layers x width of the big and the small trivial DAG */
  bigDag: [number, number];
  smallDag: [number, number];
  cpuCount: number;
  chainLength: number;
}

export const FULL_SIZES: WorkloadSizes = { bigDag: [10, 50], smallDag: [5, 10], cpuCount: 40, chainLength: 100 };
/** --quick: the same shapes, small enough for a smoke run */
export const QUICK_SIZES: WorkloadSizes = { bigDag: [3, 10], smallDag: [2, 5], cpuCount: 4, chainLength: 10 };

export function makeWorkload(id: WorkloadId, sizes: WorkloadSizes, dir: string, cpuMebibytes: number): Workload {
  switch (id) {
    case 'dag-500': {
      const [layers, width] = sizes.bigDag;
      const fixture = layeredDag({ dir, layers, width });
      return { id, fixture, description: `trivial layered DAG, ${layers} x ${width} + 1 top = ${fixture.expectedDrvCount} derivations` };
    }
    case 'dag-50': {
      const [layers, width] = sizes.smallDag;
      const fixture = layeredDag({ dir, layers, width });
      return { id, fixture, description: `trivial layered DAG, ${layers} x ${width} + 1 top = ${fixture.expectedDrvCount} derivations` };
    }
    case 'cpu-40': {
      const fixture = cpuBoundFixture(dir, sizes.cpuCount, cpuMebibytes);
      return { id, fixture, description: `${sizes.cpuCount} independent CPU-bound derivations (sha256 of ${cpuMebibytes} MiB, ~1 s each)` };
    }
    case 'chain-100': {
      const fixture = chain(sizes.chainLength, { dir });
      return { id, fixture, description: `chain of ${sizes.chainLength} trivial derivations` };
    }
  }
}
