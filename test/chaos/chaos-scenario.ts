/**
 * The contract of one chaos scenario: it starts its own farm from real parts,
 * runs builds, injects one fault, waits for the farm to recover, audits every
 * derivation it asked for, and tears the farm down. `npm run chaos` runs each
 * scenario several times at full size and prints a table; the e2e suite runs
 * each once at small size and asserts on the same outcome.
 */
export type ScenarioSize = 'small' | 'full';

export interface ScenarioOptions {
  size: ScenarioSize;
  /** --log-level of the farm's processes (default debug in tests, info in `npm run chaos`) */
  logLevel?: string;
  /** progress lines for a human watching `npm run chaos` */
  progress?: (line: string) => void;
}

export interface ScenarioOutcome {
  /** derivations the scenario's runs had to build */
  derivations: number;
  /** one line per derivation that did not end succeeded with valid, uncorrupted outputs in the coordinator's store */
  lost: string[];
  /** derivations built successfully more than once (a re-run after a lost lock, a retried copy) */
  builtTwice: number;
  /** of those, builds whose outputs differed (by NAR hash) between attempts */
  builtTwiceDifferent: number;
  /** from the fault to the farm working again (the scenario says what that means), ms */
  recoveredMs: number | undefined;
  /** scenario-specific facts worth a line in the report (attempts, messages seen) */
  notes: string[];
}

export interface ChaosScenario {
  /** short kebab-case name, the first column of the table */
  name: string;
  /** one line: the fault and what must happen */
  description: string;
  /** recovery must happen within this many seconds, or the run counts as failed */
  recoveryBoundSeconds: number;
  run(options: ScenarioOptions): Promise<ScenarioOutcome>;
}

/** Whether an outcome passes: nothing lost, no divergent double build, recovered within the bound. */
export function outcomeProblems(scenario: ChaosScenario, outcome: ScenarioOutcome): string[] {
  const problems = [...outcome.lost.map((l) => `lost: ${l}`)];
  if (outcome.builtTwiceDifferent > 0) problems.push(`${outcome.builtTwiceDifferent} derivation(s) built twice with different results`);
  if (outcome.recoveredMs === undefined) problems.push('did not recover');
  else if (outcome.recoveredMs > scenario.recoveryBoundSeconds * 1000) {
    problems.push(`recovered in ${(outcome.recoveredMs / 1000).toFixed(1)} s, over the bound of ${scenario.recoveryBoundSeconds} s`);
  }
  return problems;
}
