import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Jenkins' JUnit schema (vendored, with its source and licence in the file): what CI systems that draw test reports read. */
const JUNIT_XSD = fileURLToPath(new URL('../../fixtures/junit-4.xsd', import.meta.url));

/** xmllint's answer to an XPath expression over the report. */
export function xpath(file: string, expression: string): string {
  // xmllint ends its answer with a newline of its own
  return execFileSync('xmllint', ['--xpath', expression, file], { encoding: 'utf8' }).replace(/\n$/, '');
}

/** Why the report does not validate against the JUnit schema (xmllint's words and the report), or undefined when it does. */
export function junitSchemaErrors(file: string): string | undefined {
  const check = spawnSync('xmllint', ['--noout', '--schema', JUNIT_XSD, file], { encoding: 'utf8' });
  return check.status === 0 ? undefined : `${check.stderr}\n${readFileSync(file, 'utf8').slice(0, 20_000)}`;
}

/** The suite's counts as the report's attributes give them: tests, failures, errors, skipped. */
export function junitCounts(file: string): { tests: number; failures: number; errors: number; skipped: number } {
  const count = (name: string): number => Number(xpath(file, `string(/testsuites/testsuite/@${name})`));
  return { tests: count('tests'), failures: count('failures'), errors: count('errors'), skipped: count('skipped') };
}
