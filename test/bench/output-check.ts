import { spawn } from 'node:child_process';
import { derivationClosure, nixInstantiate } from '../harness/nix-fixtures.js';
import type { Workload } from './workloads.js';

export interface BuiltCheck {
  /** every derivation in the closure of the workload's attributes */
  drvPaths: string[];
  outputPaths: string[];
}

/**
 * After a run: every derivation of the workload (this salt) has all its
 * outputs valid in the host store, and there are as many derivations as the
 * fixture promises. Throws otherwise: a bench run that did not build
 * everything must not produce a number.
 */
export async function checkAllBuilt(workload: Workload, salt: string): Promise<BuiltCheck> {
  const roots = await nixInstantiate(workload.fixture.file, workload.fixture.attrs, { salt });
  const drvPaths = await derivationClosure(roots);
  if (drvPaths.length !== workload.fixture.expectedDrvCount) {
    throw new Error(`${workload.id}: closure has ${drvPaths.length} derivations, the fixture promises ${workload.fixture.expectedDrvCount}`);
  }
  const outputPaths = (await nixStore(['-q', '--outputs', ...drvPaths])).split('\n').filter((l) => l.length > 0);
  if (outputPaths.length < drvPaths.length) throw new Error(`${workload.id}: only ${outputPaths.length} outputs for ${drvPaths.length} derivations`);
  const invalid = (await nixStore(['--check-validity', '--print-invalid', ...outputPaths])).split('\n').filter((l) => l.length > 0);
  if (invalid.length > 0) {
    throw new Error(
      `${workload.id} (salt ${salt}): ${invalid.length} of ${outputPaths.length} outputs are not valid in the host store, e.g. ${invalid.slice(0, 3).join(' ')}`,
    );
  }
  return { drvPaths, outputPaths };
}

function nixStore(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('nix-store', [...args, '--option', 'substituters', ''], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve(stdout) : reject(new Error(`nix-store ${args.slice(0, 2).join(' ')} ... exited with ${code}:\n${stderr}`)),
    );
  });
}
