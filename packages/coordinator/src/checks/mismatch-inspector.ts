import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { hashPart, redisKeys, type CheckFinishedEvent, type Logger } from '@nixfarm/shared';
import type { CheckRecord } from './check-records.js';
import { downloadCheckNar } from './nar-download.js';
import { diffOutputs, renderOutputDiff, type OutputDiff } from './output-diff.js';
import { runDiffHook } from './diff-hook.js';

export interface MismatchInspectorOptions {
  redis: Redis;
  /** where each derivation's rebuilt copies and report live: <dir>/<drv hash part>/ (the latest check only) */
  dir: string;
  /** --diff-hook: a program run as Nix runs its diff-hook (the two outputs, the .drv, a working directory) */
  diffHook?: string;
  /** a worker's copy larger than this (bytes) is not brought back, whatever the worker sent (--check-max-nar-bytes) */
  maxNarBytes?: number;
  /** false: never run diffoscope (tests of the listing); default: use it when installed */
  diffoscope?: boolean;
  logger: Logger;
}

/** What an inspection adds to a mismatched check's record. */
type Inspected = Pick<CheckRecord, 'outputs' | 'diff' | 'diffHook'>;

const REPORT = 'report.txt';

/**
 * Shows how a rebuild differs: each differing output's NAR, sent back by the
 * checking worker, is restored outside the store (it cannot be registered
 * under the same path) beside the derivation's report; the two copies are
 * compared (diffoscope when installed, else a file listing with text diffs),
 * and the user's --diff-hook runs on them.
 */
export class MismatchInspector {
  constructor(private readonly options: MismatchInspectorOptions) {}

  async inspect(record: CheckRecord, event: CheckFinishedEvent): Promise<Inspected> {
    const { redis, logger } = this.options;
    const dir = this.dirOf(record.hash);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const sections: string[] = [
      `derivation: ${record.drvPath}`,
      `built by:   ${record.builder ?? 'unknown'} (the coordinator's copy)`,
      `rebuilt by: ${event.worker}`,
      '',
    ];
    const outputs: CheckRecord['outputs'] = [];
    const summary = { tool: 'listing' as OutputDiff['tool'], added: 0, removed: 0, changed: 0 };
    let diffHook: CheckRecord['diffHook'];
    for (const output of record.outputs) {
      if (output.differs !== true) {
        outputs.push(output);
        continue;
      }
      sections.push(`output ${output.name}: ${output.path}`, `  coordinator: ${output.expected}`, `  rebuild:     ${output.actual}`);
      const nar = event.nars?.[output.path];
      const tooBig = nar !== undefined && 'chunks' in nar && nar.bytes > (this.options.maxNarBytes ?? Number.POSITIVE_INFINITY);
      if (nar === undefined || 'skipped' in nar || tooBig) {
        const why =
          nar === undefined
            ? `${event.worker} sent no copy back`
            : 'skipped' in nar
              ? nar.skipped
              : `${event.worker}'s copy is ${nar.bytes} bytes, more than the coordinator's --check-max-nar-bytes ${this.options.maxNarBytes}`;
        outputs.push({ ...output, copy: { skipped: why } });
        sections.push(`  the rebuilt copy was not brought back: ${why}`, '');
        continue;
      }
      const copy = path.join(dir, 'rebuilt', output.name);
      const bytes = await downloadCheckNar({ redis, key: redisKeys.checkNar(event.jobId, hashPart(output.path)), chunks: nar.chunks, into: copy, logger });
      outputs.push({ ...output, copy: { bytes } });
      sections.push(`  rebuilt copy: ${copy}`, '');
      const diff = await diffOutputs({ expected: output.path, actual: copy, ...(this.options.diffoscope === false ? { diffoscope: false } : {}) });
      if (diff.tool === 'diffoscope') summary.tool = 'diffoscope';
      summary.added += diff.summary.added;
      summary.removed += diff.summary.removed;
      summary.changed += diff.summary.changed;
      sections.push(renderOutputDiff(output.path, diff), '');
      if (this.options.diffHook !== undefined) {
        const hook = await runDiffHook({ program: this.options.diffHook, expected: output.path, actual: copy, drvPath: record.drvPath, workDir: dir, logger });
        diffHook = { exitCode: hook.exitCode ?? null, output: hook.output };
        sections.push(`diff hook ${this.options.diffHook} (exit ${hook.exitCode ?? 'none'}):`, hook.output, '');
      }
    }
    await writeFile(path.join(dir, REPORT), `${sections.join('\n')}\n`);
    const compared = outputs.some((o) => o.copy !== undefined && 'bytes' in o.copy);
    return { outputs, ...(compared ? { diff: summary } : {}), ...(diffHook === undefined ? {} : { diffHook }) };
  }

  /** The plain-text report of a derivation's latest mismatch; undefined when there is none. */
  async report(hash: string): Promise<string | undefined> {
    try {
      return await readFile(path.join(this.dirOf(hash), REPORT), 'utf8');
    } catch {
      return undefined;
    }
  }

  private dirOf(hash: string): string {
    return path.join(this.options.dir, hash);
  }
}
