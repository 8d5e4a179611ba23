import { writeFile } from 'node:fs/promises';
import { stripTerminalEscapes, type EvaluationProgress, type JobsetAttribute, type RunView } from '@nixfarm/shared';
import { ApiRequestError, type ApiClient } from './api-client.js';
import { CliError, EXIT_USAGE } from './exit-codes.js';

/** Log lines of a failed build in the report: enough to see why, little enough for a CI's test page. */
const LOG_TAIL_LINES = 50;

/** What one test case came to: passed (undefined), or a failure, an error or skipped with its words. */
type Outcome = { element: 'failure' | 'error'; type: string; message: string; text: string } | { element: 'skipped'; text: string } | undefined;

/** The last lines of each failed derivation's log (or why there is none), by .drv path. */
export type LogTails = ReadonlyMap<string, string>;

/**
 * JUnit XML of a jobset run (the Jenkins/Ant dialect CI systems read): one
 * <testcase> per attribute, classname its parent attribute path and name its
 * last name. A failed build is a <failure> with the tail of its log, a
 * dependency failure one naming the dependency (with the dependency's log),
 * an evaluation error an <error> with Nix's message, and unsupported,
 * cancelled or unfinished attributes are <skipped> with the reason. An
 * evaluation that stopped part way adds one <error> case, `(evaluation)`, so
 * the report is never green for a jobset that was not wholly evaluated.
 */
function junitXml(
  run: Pick<RunView, 'id' | 'createdAt' | 'finishedAt'>,
  attributes: readonly JobsetAttribute[],
  evaluation: EvaluationProgress,
  logs: LogTails,
): string {
  const cases = attributes.map((a) => ({
    classname: a.attrPath.slice(0, -1).join('.') || 'jobset',
    name: a.attrPath.at(-1) ?? a.attr,
    outcome: outcomeOf(a, logs),
  }));
  if (evaluation.state !== 'done') {
    const why = evaluation.error ?? `evaluation ${evaluation.state}`;
    cases.push({
      classname: 'jobset',
      name: '(evaluation)',
      outcome: { element: 'error', type: `evaluation-${evaluation.state}`, message: firstLine(why), text: why },
    });
  }
  const count = (element: string) => cases.filter((c) => c.outcome?.element === element).length;
  const seconds = run.finishedAt === undefined ? undefined : ((run.finishedAt - run.createdAt) / 1000).toFixed(3);
  const suite = attrs({
    name: `nixfarm run ${run.id}`,
    tests: String(cases.length),
    failures: String(count('failure')),
    errors: String(count('error')),
    skipped: String(count('skipped')),
    ...(seconds === undefined ? {} : { time: seconds }),
    timestamp: new Date(run.createdAt).toISOString().replace(/\.\d+Z$/, ''),
  });
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<testsuites>',
    `  <testsuite${suite}>`,
    '    <properties>',
    `      <property${attrs({ name: 'nixfarm.run', value: run.id })}/>`,
    `      <property${attrs({ name: 'nixfarm.evaluation', value: evaluation.state })}/>`,
    '    </properties>',
  ];
  for (const c of cases) {
    const head = `    <testcase${attrs({ classname: c.classname, name: c.name })}`;
    const o = c.outcome;
    if (o === undefined) lines.push(`${head}/>`);
    else if (o.element === 'skipped') lines.push(`${head}>`, `      <skipped>${text(o.text)}</skipped>`, '    </testcase>');
    else lines.push(`${head}>`, `      <${o.element}${attrs({ type: o.type, message: o.message })}>${text(o.text)}</${o.element}>`, '    </testcase>');
  }
  lines.push('  </testsuite>', '</testsuites>', '');
  return lines.join('\n');
}

function outcomeOf(a: JobsetAttribute, logs: LogTails): Outcome {
  switch (a.buildStatus) {
    case 'succeeded':
    case 'cached':
    case 'not-built':
      return undefined;
    case 'evaluation-failed': {
      const error = a.error ?? 'evaluation failed';
      return { element: 'error', type: a.errorKind ?? 'evaluation-error', message: errorLine(error), text: error };
    }
    case 'failed': {
      const drv = a.failedDrv ?? a.drvPath ?? '';
      return { element: 'failure', type: a.failure ?? 'failed', message: `build of ${drv} ${a.failure ?? 'failed'}`, text: logs.get(drv) ?? '' };
    }
    case 'dependency-failed': {
      const dependency = a.dependency;
      const message = `dependency ${dependency ?? '(unknown input)'} of ${a.drvPath ?? a.attr} failed`;
      return { element: 'failure', type: 'dependency-failed', message, text: dependency === undefined ? message : `${message}\n${logs.get(dependency) ?? ''}` };
    }
    case 'unsupported':
      return { element: 'skipped', text: `unsupported: no registered worker can build ${a.drvPath ?? a.attr} (system ${a.system ?? '?'})` };
    case 'cancelled':
      return { element: 'skipped', text: `cancelled: the run was cancelled before ${a.drvPath ?? a.attr} was built` };
    case 'pending':
      return { element: 'skipped', text: `not finished: ${a.drvPath ?? a.attr} was still waiting or building when the report was written` };
  }
}

/** Derivations whose logs the report quotes: each failed build, and the failed dependency of each dependency failure. */
function failedDerivations(attributes: readonly JobsetAttribute[]): string[] {
  const drvs = attributes.flatMap((a) => {
    if (a.buildStatus === 'failed') return [a.failedDrv ?? a.drvPath ?? ''];
    if (a.buildStatus === 'dependency-failed' && a.dependency !== undefined) return [a.dependency];
    return [];
  });
  return [...new Set(drvs.filter((d) => d !== ''))];
}

/** The tail of each failed derivation's log, through the API `nixfarm log` reads (a log the coordinator lacks says why instead). */
async function fetchLogTails(client: ApiClient, drvPaths: readonly string[]): Promise<Map<string, string>> {
  const tails = new Map<string, string>();
  for (const drv of drvPaths) {
    try {
      const lines = (await client.getText(`/api/logs?${new URLSearchParams({ path: drv }).toString()}`)).replace(/\n$/, '').split('\n');
      const tail = lines.slice(-LOG_TAIL_LINES);
      tails.set(drv, `log of ${drv} (last ${tail.length} of ${lines.length} lines; \`nixfarm log ${drv}\` prints it all):\n${tail.join('\n')}`);
    } catch (error) {
      if (!(error instanceof ApiRequestError)) throw error;
      tails.set(drv, `no log of ${drv}: ${error.message}`);
    }
  }
  return tails;
}

/** Fetches what the report quotes (the run's times, the failed builds' logs) and writes it to `file`. */
export async function writeJunitReport(
  client: ApiClient,
  runId: string,
  attributes: readonly JobsetAttribute[],
  evaluation: EvaluationProgress,
  file: string,
): Promise<void> {
  const run = await client.getRun(runId);
  const logs = await fetchLogTails(client, failedDerivations(attributes));
  try {
    await writeFile(file, junitXml(run, attributes, evaluation, logs));
  } catch (error) {
    throw new CliError(`cannot write the JUnit report to ${file}: ${(error as Error).message}`, EXIT_USAGE);
  }
}

/** Characters XML 1.0 cannot hold at all, even escaped (control characters, lone surrogates, U+FFFE/U+FFFF). */
const NOT_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** Logs carry colours and control characters: colours go, other unrepresentable characters become U+FFFD. */
function clean(value: string): string {
  return stripTerminalEscapes(value).replace(NOT_XML, '\uFFFD');
}

function text(value: string): string {
  return clean(value).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\r/g, '&#13;');
}

function attrs(values: Record<string, string>): string {
  return Object.entries(values)
    .map(
      ([name, value]) =>
        ` ${name}="${clean(value)
          .replace(/&/g, '&amp;')
          .replace(/</g, '&lt;')
          .replace(/>/g, '&gt;')
          .replace(/"/g, '&quot;')
          .replace(/\n/g, '&#10;')
          .replace(/\r/g, '&#13;')
          .replace(/\t/g, '&#9;')}"`,
    )
    .join('');
}

function firstLine(value: string): string {
  return value.trim().split('\n')[0] ?? '';
}

/** Nix's `error: ...` line (the trace and position follow it): the message a CI shows in a list. */
function errorLine(value: string): string {
  const lines = value.trim().split('\n');
  return lines.find((l) => l.startsWith('error:')) ?? lines[0] ?? '';
}
