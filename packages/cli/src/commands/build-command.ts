import path from 'node:path';
import { Command } from 'commander';
import { derivationName, imageRepositoryProblem, isLoopbackRegistry, type RunEvent, type RunView, type SubmitRunRequest } from '@nixfarm/shared';
import { printJobsetReport } from '../jobset-report.js';
import { ApiClient, ApiRequestError, DEFAULT_COORDINATOR_URL } from '../api-client.js';
import { TOKEN_OPTION_HELP } from '../api-token-source.js';
import { CliError, EXIT_BUILD_FAILED, EXIT_OK, EXIT_USAGE } from '../exit-codes.js';
import { collect, integer } from '../config-loader.js';
import { RunTally } from '../run-tally.js';
import { awaitImagePublications, imagesFailed } from '../image-report.js';

export { DEFAULT_COORDINATOR_URL };

/** nix-build's two-value flags (`--arg NAME EXPR`) do not fit commander; take them out of argv first. */
function extractPairs(argv: readonly string[], flag: string): { pairs: Array<[string, string]>; rest: string[] } {
  const pairs: Array<[string, string]> = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === flag) {
      const name = argv[i + 1];
      const value = argv[i + 2];
      if (name === undefined || value === undefined) throw new CliError(`${flag} takes two values: ${flag} NAME VALUE`);
      pairs.push([name, value]);
      i += 2;
    } else {
      rest.push(argv[i]!);
    }
  }
  return { pairs, rest };
}

/** Prints one line on stderr per event a person cares about, each starting with the run's counts after it. */
class ProgressPrinter {
  private readonly tally: RunTally;
  constructor(total: number | undefined) {
    this.tally = new RunTally(total);
  }

  print(event: RunEvent): void {
    this.tally.apply(event);
    const out = (line: string) => process.stderr.write(`${this.tally.toString()} ${line}\n`);
    switch (event.type) {
      case 'run-started':
      case 'drv-queued':
      case 'run-finished':
        return;
      case 'drv-checked': {
        const name = derivationName(event.drvPath);
        const where = event.worker === undefined ? '' : ` on ${event.worker}`;
        if (event.state === 'reproducible') out(`reproducible: ${name} (rebuilt${where}, same NAR hashes)`);
        else if (event.state === 'not-reproducible')
          out(`NOT REPRODUCIBLE: ${event.drvPath} (rebuilt${where}): \`nixfarm diff ${event.drvPath}\` shows how it differs`);
        else out(`check ${event.state.toUpperCase()}: ${event.drvPath}${where}${event.error === undefined ? '' : `: ${event.error}`}`);
        return;
      }
      case 'drv-unsupported': {
        const features = event.requiredFeatures.length > 0 ? `features ${event.requiredFeatures.join(', ')}` : 'no features';
        const workers = event.workers.length === 0 ? 'no worker is registered' : event.workers.map((w) => `${w.name}: ${w.reason}`).join('; ');
        process.stderr.write(
          `UNSUPPORTED: no worker can build ${event.drvPath} (system ${event.system}, ${features}): ${workers}. It stays queued until a capable worker registers (Ctrl-C to stop waiting).\n`,
        );
        return;
      }
      case 'drv-started':
        out(`building ${derivationName(event.drvPath)} on ${event.worker}`);
        return;
      case 'drv-handed-back':
        out(`${derivationName(event.drvPath)} handed back by ${event.worker} (${event.reason}); queued again`);
        return;
      case 'drv-retrying':
        out(
          `${derivationName(event.drvPath)} aborted on ${event.worker} (try ${event.attempts} of ${event.maxAttempts})${event.error === undefined ? '' : `: ${event.error}`}; retrying in ${event.delayMs / 1000} s`,
        );
        return;
      case 'drv-finished':
        if (event.status === 'succeeded') {
          out(`built ${derivationName(event.drvPath)} on ${event.worker ?? '?'}`);
        } else if (event.status === 'dependency-failed') {
          out(`${derivationName(event.drvPath)}: dependency-failed (${event.error ?? 'an input failed'})`);
        } else {
          out(
            `${event.status.toUpperCase()}: ${event.drvPath}${event.worker === undefined ? '' : ` on ${event.worker}`}${event.error === undefined ? '' : `: ${event.error}`}`,
          );
          if (event.logTail !== undefined && event.logTail.length > 0) {
            process.stderr.write(`  last ${event.logTail.length} log lines:\n`);
            for (const line of event.logTail) process.stderr.write(`  > ${line}\n`);
          }
        }
        return;
    }
  }
}

export function buildCommand(): Command {
  return new Command('build')
    .description('build a Nix expression on the farm, like nix-build: output paths on stdout, progress on stderr')
    .argument('[file]', 'Nix file to evaluate on the coordinator machine (default ./default.nix unless --expr)')
    .option('-A, --attr <attr>', 'attribute to build, repeatable', collect)
    .option('-E, --expr <expr>', 'build this expression instead of a file')
    .option('-I, --include <path>', 'add a path to the Nix search path, repeatable', collect)
    .option('--arg <name> <expr>', 'pass a Nix expression as an argument (two values, repeatable)')
    .option('--argstr <name> <value>', 'pass a string as an argument (two values, repeatable)')
    .option('--priority <n>', 'higher runs first (-1000 .. 1000, default 0)', integer('--priority'))
    .option('--share <n>', "this run's weight among runs of the same priority: its fair share of the slots (1 .. 1000, default 1)", integer('--share'))
    .option('--order <order>', 'ready builds: critical-path (longest remaining chain first, default) or fifo')
    .option('--push-to <url>', "also upload this run's outputs to this binary cache once built (as the coordinator's --push-to), repeatable", collect)
    .option('--rebuild-failed', 'build derivations that failed before instead of reporting them as cached failures')
    .option(
      '--check',
      'build each requested derivation again on another worker (after building it, if need be) and compare: exit 1 if the outputs differ, as nix-build --check',
    )
    .option('--timeout <seconds>', 'longest a single build may run (default 36000)', integer('--timeout'))
    .option('--max-silent-time <seconds>', 'longest a build may print nothing (default 3600)', integer('--max-silent-time'))
    .option('--coordinator <url>', `coordinator HTTP API (default ${DEFAULT_COORDINATOR_URL}, or $NIXFARM_COORDINATOR)`)
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('--json', 'print the finished run as JSON on stdout instead of output paths (with --jobset: one JSON line per attribute)')
    .option('--jobset', 'the value is a jobset: build every derivation in it (recursing as nix-eval-jobs does), each attribute with its own result')
    .option('--force-recurse', 'with --jobset: enter every attribute set, not only those with recurseForDerivations = true')
    .option('--eval-workers <n>', "with --jobset: evaluator processes at once (default: the coordinator's cores)", integer('--eval-workers'))
    .option('--eval-max-memory <MiB>', "with --jobset: each evaluator's heap bound in MiB", integer('--eval-max-memory'))
    .option('--flake <ref>', 'with --jobset: the jobset is a flake attribute, REF#ATTR (.#checks.x86_64-linux, path:/srv/repo#hydraJobs)')
    .option('--eval-only', "with --jobset: evaluate only, print each attribute with nix-eval-jobs' isCached, build nothing")
    .option('--junit <file>', 'with --jobset: also write a JUnit XML report, one test case per attribute')
    .option('--publish-images <registry/repo>', 'push each output that is an image (docker-archive or OCI layout) to REGISTRY/REPO, tagged ATTR-HASHPART')
    .option('--registry-auth <file>', 'with --publish-images: registry credentials, a containers-auth.json file on the coordinator machine (skopeo --authfile)')
    .option('--registry-insecure', 'with --publish-images: plain HTTP without TLS verification, allowed only for a registry on loopback')
    .option('--tag-latest', 'with --publish-images: also tag each image latest')
    .addHelpText(
      'after',
      "\nExamples:\n  nixfarm build ./release.nix -A hello -A tests --argstr version 1.2\n  nixfarm build --expr '(import ./default.nix {}).app'\n  nixfarm build ./release.nix -A hello --check\n  nixfarm build --jobset ./release.nix --force-recurse --json\n  nixfarm build --jobset --flake .#checks.x86_64-linux --junit report.xml\n  nixfarm build --jobset --flake path:/srv/repo#hydraJobs --eval-only --json\n\nExit codes: 0 built, 1 a build failed (with --check: or a rebuild differed; with --jobset: an attribute failed to evaluate or build; with --eval-only: to evaluate), 2 usage, evaluation or connection error.",
    )
    .action(async () => undefined);
}

function orderOf(value: string | undefined): 'critical-path' | 'fifo' {
  if (value === undefined || value === 'critical-path' || value === 'fifo') return value ?? 'critical-path';
  throw new CliError(`--order takes critical-path or fifo, got ${JSON.stringify(value)}`);
}

/** The --publish-images options as request fields, checked here so that a mistake is named before anything is sent. */
function publishingOptions(opts: {
  publishImages?: string;
  registryAuth?: string;
  registryInsecure?: boolean;
  tagLatest?: boolean;
}): Pick<SubmitRunRequest, 'publishImages' | 'registryAuth' | 'registryInsecure' | 'tagLatest'> {
  const { publishImages, registryAuth, registryInsecure, tagLatest } = opts;
  if (publishImages === undefined) {
    const misplaced = Object.entries({ '--registry-auth': registryAuth, '--registry-insecure': registryInsecure, '--tag-latest': tagLatest }).flatMap(
      ([flag, value]) => (value === undefined ? [] : [flag]),
    );
    if (misplaced.length > 0)
      throw new CliError(`${misplaced.join(', ')} appl${misplaced.length === 1 ? 'ies' : 'y'} only with --publish-images REGISTRY/REPO`);
    return {};
  }
  const problem = imageRepositoryProblem(publishImages);
  if (problem !== undefined) throw new CliError(`--publish-images: ${problem}`);
  const registry = publishImages.split('/')[0]!;
  if (registryInsecure === true && !isLoopbackRegistry(registry))
    throw new CliError(
      `--registry-insecure turns TLS verification off and is allowed only for a registry on loopback (127.0.0.1, localhost, [::1]), not ${registry}`,
    );
  return {
    publishImages,
    // The coordinator reads the file (skopeo --authfile there): a relative path means the caller's directory, as for the Nix file.
    ...(registryAuth === undefined ? {} : { registryAuth: path.resolve(registryAuth) }),
    ...(registryInsecure === true ? { registryInsecure: true } : {}),
    ...(tagLatest === true ? { tagLatest: true } : {}),
  };
}

/** `-I dir` and `-I name=dir` with a relative dir mean the caller's directory, as with nix-build. */
function absoluteSearchPath(entry: string): string {
  const eq = entry.indexOf('=');
  const [prefix, value] = eq >= 0 ? [entry.slice(0, eq + 1), entry.slice(eq + 1)] : ['', entry];
  if (value.includes('://') || value.startsWith('<') || value.startsWith('/')) return entry;
  return prefix + path.resolve(value);
}

/** Runs `nixfarm build`; separate from commander so that --arg pairs can be taken out first. */
export async function runBuild(argv: readonly string[]): Promise<number> {
  const args = extractPairs(argv, '--arg');
  const argstrs = extractPairs(args.rest, '--argstr');
  const command = buildCommand();
  command.exitOverride();
  command.parse(argstrs.rest, { from: 'user' });
  const opts = command.opts<{
    attr?: string[];
    expr?: string;
    include?: string[];
    priority?: number;
    share?: number;
    pushTo?: string[];
    coordinator?: string;
    token?: string;
    json?: boolean;
    rebuildFailed?: boolean;
    check?: boolean;
    order?: string;
    timeout?: number;
    maxSilentTime?: number;
    jobset?: boolean;
    forceRecurse?: boolean;
    evalWorkers?: number;
    evalMaxMemory?: number;
    flake?: string;
    evalOnly?: boolean;
    junit?: string;
    publishImages?: string;
    registryAuth?: string;
    registryInsecure?: boolean;
    tagLatest?: boolean;
  }>();
  const file = command.args[0];
  if ([file, opts.expr, opts.flake].filter((v) => v !== undefined).length > 1) throw new CliError('give one of a file, --expr or --flake, not several');
  const jobset = opts.jobset ?? false;
  if (jobset && (opts.attr ?? []).length > 0) throw new CliError('--jobset builds every attribute: -A cannot be given with it');
  const jobsetOnly = {
    '--force-recurse': opts.forceRecurse,
    '--eval-workers': opts.evalWorkers,
    '--eval-max-memory': opts.evalMaxMemory,
    '--flake': opts.flake,
    '--eval-only': opts.evalOnly,
    '--junit': opts.junit,
  };
  const misplaced = Object.entries(jobsetOnly).flatMap(([flag, value]) => (value === undefined ? [] : [flag]));
  if (!jobset && misplaced.length > 0) throw new CliError(`${misplaced.join(', ')} appl${misplaced.length === 1 ? 'ies' : 'y'} only with --jobset`);
  if (jobset && opts.check === true)
    throw new CliError(
      "--check checks the derivations of a run built with -A, --expr or a file; a jobset's builds are checked in the background with the coordinator's --check-fraction",
    );
  if (opts.flake !== undefined && (args.pairs.length > 0 || argstrs.pairs.length > 0))
    throw new CliError("--arg and --argstr do not apply to --flake (a flake's outputs take no arguments): put the values in the flake's outputs instead");
  if (opts.share !== undefined && (opts.share < 1 || opts.share > 1000)) throw new CliError(`--share takes a weight from 1 to 1000, got ${opts.share}`);
  const publishing = publishingOptions(opts);
  const request: SubmitRunRequest = {
    attrs: opts.attr ?? [],
    args: args.pairs.map(([name, expr]) => ({ name, expr })),
    argstrs: argstrs.pairs.map(([name, value]) => ({ name, value })),
    // Relative search paths and files mean the caller's directory; the coordinator evaluates elsewhere.
    includes: (opts.include ?? []).map(absoluteSearchPath),
    priority: opts.priority ?? 0,
    ...(opts.share === undefined ? {} : { share: opts.share }),
    ...(opts.pushTo === undefined ? {} : { pushTo: opts.pushTo }),
    cwd: process.cwd(),
    rebuildFailed: opts.rebuildFailed ?? false,
    ...(opts.check === true ? { check: true } : {}),
    order: orderOf(opts.order),
    timeoutSeconds: opts.timeout ?? 36_000,
    maxSilentSeconds: opts.maxSilentTime ?? 3600,
    // A flake reference goes as given: the coordinator resolves a relative one against cwd, as nix-eval-jobs --flake would here.
    ...(opts.flake !== undefined ? { flake: opts.flake } : opts.expr !== undefined ? { expr: opts.expr } : { file: path.resolve(file ?? 'default.nix') }),
    ...(jobset ? { jobset: true, forceRecurse: opts.forceRecurse ?? false } : {}),
    ...(opts.evalOnly === true ? { evalOnly: true } : {}),
    ...(opts.evalWorkers === undefined ? {} : { evalWorkers: opts.evalWorkers }),
    ...(opts.evalMaxMemory === undefined ? {} : { evalMaxMemoryMiB: opts.evalMaxMemory }),
    ...publishing,
  };
  const client = await ApiClient.connect(opts);
  let run;
  try {
    run = await client.submitRun(request);
  } catch (error) {
    if (error instanceof ApiRequestError) {
      throw new CliError(
        error.code === 'evaluation-failed' ? `evaluation failed:\n${error.message}` : `coordinator refused the run (${error.code}): ${error.message}`,
        EXIT_USAGE,
      );
    }
    throw error;
  }
  if (jobset) {
    process.stderr.write(
      `nixfarm: run ${run.id}: evaluating the jobset; ${opts.evalOnly === true ? 'nothing is built (--eval-only)' : 'builds start as attributes are evaluated'}\n`,
    );
    await followRun(client, run, undefined);
    const published = await awaitImagePublications(client, await client.getRun(run.id));
    const code = await printJobsetReport(client, run.id, {
      json: opts.json ?? false,
      evalOnly: opts.evalOnly ?? false,
      ...(opts.junit === undefined ? {} : { junit: path.resolve(opts.junit) }),
    });
    return code === EXIT_OK && imagesFailed(published) ? EXIT_BUILD_FAILED : code;
  }
  process.stderr.write(`nixfarm: run ${run.id}: ${run.total} derivation${run.total === 1 ? '' : 's'} to build\n`);
  return followRunToEnd(client, run, { json: opts.json ?? false });
}

/**
 * Follows a run until it ends, printing progress on stderr, then its output
 * paths on stdout (or the run as JSON); returns the exit code. `nixfarm build`
 * and `nixfarm wait` share it. The event stream is replayed from the start and
 * resumed after dropped connections, so a coordinator restart in between is
 * only a pause.
 */
export async function followRunToEnd(client: ApiClient, started: RunView, options: { json: boolean }): Promise<number> {
  await followRun(client, started, started.total);
  const run = await awaitImagePublications(client, await client.getRun(started.id));
  if (options.json) process.stdout.write(`${JSON.stringify(run, null, 2)}\n`);
  if (run.status !== 'succeeded') {
    const failed = Object.entries(run.counts)
      .filter(([s]) => s !== 'succeeded')
      .map(([s, n]) => `${n} ${s}`)
      .join(', ');
    process.stderr.write(`nixfarm: run ${run.id} ${run.status}${failed ? `: ${failed}` : ''}${run.error ? ` (${run.error})` : ''}\n`);
    return EXIT_BUILD_FAILED;
  }
  if (!options.json) for (const r of run.results) process.stdout.write(`${r.outputPath}\n`);
  return imagesFailed(run) ? EXIT_BUILD_FAILED : EXIT_OK;
}

/** Prints a run's progress on stderr until it ends; Ctrl-C cancels it. total: undefined for a jobset run, which grows. */
async function followRun(client: ApiClient, started: RunView, total: number | undefined): Promise<void> {
  // Ctrl-C stops the farm's work too, as it would stop a local nix-build; a second one leaves at once.
  const runId = started.id;
  const onInterrupt = () => {
    process.off('SIGINT', onInterrupt);
    process.stderr.write(`\nnixfarm: cancelling run ${runId} (Ctrl-C again to leave it running)\n`);
    void client.post(`/api/runs/${encodeURIComponent(runId)}/cancel`).catch(() => undefined);
  };
  process.on('SIGINT', onInterrupt);
  // Even a run that ended during submission is replayed: cached failures are reported as events.
  const printer = new ProgressPrinter(total);
  try {
    const onReconnecting = (reason: string) =>
      process.stderr.write(`nixfarm: lost the coordinator (${reason}); reconnecting. The run goes on; \`nixfarm wait ${runId}\` follows it from anywhere.\n`);
    for await (const event of client.followRun(runId, { onReconnecting })) printer.print(event);
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}
