import type { PlannedDerivation } from '@nixfarm/coordinator';

export interface PlannedDerivationSpec {
  /** the 32-character hash part of the .drv path */
  hash: string;
  name: string;
  /** the `out` output's path */
  out: string;
  /** the hashes of input derivations the plan holds */
  inputs?: readonly string[];
}

/**
 * A planned x86_64-linux derivation with no .drv behind it, for tests that
 * drive the graph and the event handler on a real Redis without Nix.
 */
export function plannedDerivation({ hash, name, out, inputs = [] }: PlannedDerivationSpec): PlannedDerivation {
  const path = `/nix/store/${hash}-${name}.drv`;
  return {
    hash,
    inputs: [...inputs],
    queue: 'build@x86_64-linux',
    drv: { path, name, inputSrcs: [], system: 'x86_64-linux', requiredSystemFeatures: [], preferLocalBuild: false },
    job: { drvPath: path, name, system: 'x86_64-linux', requiredFeatures: [], outputs: { out }, inputPaths: [] },
  };
}

/** A name as a 32-character hash part: padded with 0 and reduced to Nix's base-32 alphabet (no e, o, t, u). */
export function hashOf(name: string): string {
  return name
    .padEnd(32, '0')
    .replace(/[^0-9a-df-np-sv-z]/g, '0')
    .slice(0, 32);
}
