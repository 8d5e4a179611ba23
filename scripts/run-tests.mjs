#!/usr/bin/env node
// Runs the compiled tests with Node's test runner, whose summary lines are
// what CI reads. Node 20's `--test` does not expand globs, so the files are
// listed here.
//
//   node scripts/run-tests.mjs                 unit, then integration, then e2e
//   node scripts/run-tests.mjs unit            one group (unit, integration or e2e)
//   node scripts/run-tests.mjs e2e dag fail    files of a group whose name contains "dag" or "fail"
//   node scripts/run-tests.mjs store-path      matching files of every group
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'test', 'dist');

// Unit files are independent and run concurrently. Integration files need
// only a private redis-server each (no Nix, no machines) and run
// concurrently too. E2e files start real farms, each with its own ports,
// Redis, machines, GC-roots dir and salted derivations, and spend most of
// their time waiting (lock and drain timeouts, sleeping builders): they run
// in two lanes, one `node --test` per file, the slowest started first so
// that both lanes end together (node --test itself sorts files by name).
// The files in `alone` run afterwards, one at a time: three compare speeds
// (placement by speed factor, critical path against FIFO, a small run's time
// beside a large one against its critical path), and the harness
// test builds in machine stores with Nix's build users, whose uids the host
// store's builds share (Nix kills a build user's processes before using it).
const GROUPS = {
  unit: { flags: [] },
  integration: { flags: ['--test-concurrency=3'] },
  e2e: {
    lanes: 2,
    alone: ['scheduling.test.js', 'critical-path.test.js', 'fair-share.test.js', 'harness.test.js'],
    // by their time in a serial run (about 100, 85, 50, 45, 35, 35, 30, 30 s); the rest take 20 s or less
    slowestFirst: ['worker-drain', 'build-logs', 'lost-lock', 'lost-worker', 'bad-input.test', 'redis-unreachable', 'why', 'disk-floor'],
  },
};

/** The files of a group in the order to start them: the known slow ones first, then by name. */
function startOrder(group, files) {
  const rank = (file) => {
    const i = (GROUPS[group].slowestFirst ?? []).findIndex((name) => relative(join(dist, group), file).startsWith(name));
    return i === -1 ? Number.MAX_SAFE_INTEGER : i;
  };
  return [...files].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

function testFiles(dir) {
  if (!existsSync(dir)) return [];
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...testFiles(path));
    else if (entry.isFile() && entry.name.endsWith('.test.js')) found.push(path);
  }
  return found.sort();
}

/** tsc -b never deletes outputs of removed sources; running them would test code that no longer exists. */
function hasSource(file) {
  const rel = relative(dist, file).replace(/\.js$/, '');
  return ['.ts', '.mts', '.tsx'].some((ext) => existsSync(join(root, 'test', rel + ext)));
}

// --test-force-exit exists since Node 20.14 (--test-concurrency since 20.10)
const [major, minor] = process.versions.node.split('.').map(Number);
const FORCE_EXIT = major > 20 || minor >= 14 ? ['--test-force-exit'] : [];

const args = process.argv.slice(2);
const chosenGroups = args.filter((a) => a in GROUPS);
const filters = args.filter((a) => !(a in GROUPS));
const groups = chosenGroups.length > 0 ? chosenGroups : Object.keys(GROUPS);

const plan = [];
let compiled = 0;
for (const group of groups) {
  const all = testFiles(join(dist, group));
  compiled += all.length;
  const current = all.filter((f) => {
    if (hasSource(f)) return true;
    process.stderr.write(`run-tests: skipping ${relative(root, f)}: its source is gone (stale build output)\n`);
    return false;
  });
  const files = filters.length === 0 ? current : current.filter((f) => filters.some((s) => relative(join(dist, group), f).includes(s)));
  const alone = new Set(GROUPS[group].alone ?? []);
  const together = startOrder(
    group,
    files.filter((f) => !alone.has(relative(join(dist, group), f))),
  );
  const apart = files.filter((f) => alone.has(relative(join(dist, group), f)));
  const { flags = [], lanes } = GROUPS[group];
  if (together.length > 0) plan.push({ group, files: together, flags, lanes });
  if (apart.length > 0) plan.push({ group: `${group} (one at a time)`, files: apart, flags: ['--test-concurrency=1'] });
}

if (compiled === 0) {
  process.stderr.write(
    `run-tests: no compiled tests under ${relative(root, dist)}/{${groups.join(',')}}: the build did not produce tests (run \`npm run build\`)\n`,
  );
  process.exit(1);
}
if (plan.length === 0) {
  process.stderr.write(`run-tests: no test file in ${groups.join(', ')} matches ${filters.map((f) => JSON.stringify(f)).join(' or ')}\n`);
  process.exit(1);
}

/**
 * One `node --test` over `files`. Its output is passed through as it comes
 * (stream) or handed back whole (a lane's file, printed when it ends), and
 * read for the spec reporter's summary (ℹ pass N), remembered line by line:
 * a long list of failures can follow it.
 */
function nodeTest(files, flags, stream) {
  // --test-force-exit: a test that leaks a handle (a forgotten redis, a
  // machine never destroyed) must not hang CI; process exit runs the
  // harness's exit hooks, which kill what the test left behind.
  const child = spawn(process.execPath, ['--test', ...flags, ...FORCE_EXIT, '--test-reporter=spec', ...files.map((f) => relative(root, f))], {
    cwd: root,
    stdio: ['ignore', 'pipe', stream ? 'inherit' : 'pipe'],
  });
  const summary = { pass: 0, fail: 0, skipped: 0 };
  const output = { stdout: '', stderr: '' };
  let partial = '';
  child.stdout.on('data', (chunk) => {
    if (stream) process.stdout.write(chunk);
    else output.stdout += chunk.toString();
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const m = /^ℹ (pass|fail|skipped) (\d+)$/.exec(line.trim());
      if (m) summary[m[1]] = Number(m[2]);
    }
  });
  child.stderr?.on('data', (chunk) => (output.stderr += chunk.toString()));
  return new Promise((resolve) => {
    child.once('error', (error) => {
      process.stderr.write(`run-tests: could not run node --test: ${error.message}\n`);
      resolve({ code: 1, summary, output });
    });
    child.once('close', (status, signal) => resolve({ code: status ?? 128 + (constants.signals[signal] ?? 0), summary, output }));
  });
}

/** Each file in a `node --test` of its own, `lanes` at a time in the given order; a file's output is printed whole when it ends. */
async function inLanes(files, flags, lanes) {
  const queue = [...files];
  const results = [];
  const lane = async () => {
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
      const started = Date.now();
      const result = await nodeTest([file], flags, false);
      process.stdout.write(result.output.stdout);
      process.stderr.write(result.output.stderr);
      const { pass, fail } = result.summary;
      process.stderr.write(`run-tests: ${relative(dist, file)}: ${pass} passed, ${fail} failed in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
      results.push(result);
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  return results;
}

let exitCode = 0;
const totals = { pass: 0, fail: 0, skipped: 0 };
for (const { group, files, flags, lanes } of plan) {
  process.stderr.write(`run-tests: ${group}: ${files.length} file${files.length === 1 ? '' : 's'}${lanes ? `, ${lanes} at a time` : ''}\n`);
  const results = lanes ? await inLanes(files, flags, lanes) : [await nodeTest(files, flags, true)];
  for (const { code, summary } of results) {
    for (const key of Object.keys(totals)) totals[key] += summary[key];
    // keep going so that one run reports every group; fail with the first failure's code
    if (code !== 0 && exitCode === 0) exitCode = code;
  }
}
if (exitCode !== 0 && totals.fail === 0) totals.fail = 1; // a group that crashed before reporting still failed
process.stdout.write(`\n${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped\n`);
process.exit(exitCode);
