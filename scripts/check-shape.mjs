#!/usr/bin/env node
// `npm run check`: the codebase's own shape. Runs every checker (format and lint, dependency rules, unused
// code) even when an earlier one fails, so one run shows all findings; exits non-zero when any failed.
import { spawnSync } from 'node:child_process';

const CHECKS = [
  { name: 'lint (biome: format + lint)', script: 'lint' },
  { name: 'deps (dependency-cruiser: cycles, wrong-way imports)', script: 'deps' },
  { name: 'knip (unused files, exports, dependencies)', script: 'knip' },
];

const npm = process.env.npm_execpath;
const failed = [];
for (const check of CHECKS) {
  process.stdout.write(`\n== ${check.name}\n`);
  // npm_execpath is npm's own CLI script when run from npm; elsewhere fall back to npm on PATH.
  const result = npm?.endsWith('.js')
    ? spawnSync(process.execPath, [npm, 'run', '--silent', check.script], { stdio: 'inherit' })
    : spawnSync('npm', ['run', '--silent', check.script], { stdio: 'inherit' });
  if (result.status !== 0) failed.push(check.script);
}

if (failed.length > 0) {
  process.stderr.write(`\ncheck: failed: ${failed.join(', ')} (npm run format fixes formatting; see the findings above for the rest)\n`);
  process.exit(1);
}
process.stdout.write('\ncheck: all clean\n');
