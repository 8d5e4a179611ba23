import { Command } from 'commander';
import { apiErrorSchema, isHashPrefix, runIdSchema } from '@nixfarm/shared';
import { CliError, EXIT_USAGE } from '../exit-codes.js';
import { DEFAULT_COORDINATOR_URL } from './build-command.js';
import { resolveApiToken, TOKEN_OPTION_HELP } from '../api-token-source.js';
import { resolveLocalSymlink } from './why-command.js';

interface LogFlags {
  coordinator?: string;
  token?: string;
  follow?: boolean;
  json?: boolean;
}

/** A refusal by the coordinator (unknown derivation or run, ambiguous prefix, bad argument): exit 2. */
class LogRequestError extends CliError {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message, EXIT_USAGE);
  }
}

async function request(baseUrl: string, token: string | undefined, query: URLSearchParams): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(new URL(`/api/logs?${query.toString()}`, baseUrl), { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
  } catch (error) {
    throw new CliError(
      `cannot reach the coordinator at ${baseUrl} (${(error as Error & { cause?: Error }).cause?.message ?? (error as Error).message}): is \`nixfarm coordinator\` running? (set --coordinator or NIXFARM_COORDINATOR)`,
      EXIT_USAGE,
    );
  }
  if (response.ok) return response;
  const text = await response.text();
  let message = text;
  let code: string | undefined;
  try {
    const parsed = apiErrorSchema.safeParse(JSON.parse(text));
    if (parsed.success) ({ message, code } = parsed.data.error);
  } catch {
    // not JSON: the text is the message
  }
  throw new LogRequestError(response.status, code, message);
}

/**
 * What the argument names: a store path or hash prefix (path=), or a run
 * (run=). A word that can be either (run ids and hash prefixes share
 * letters) is tried as a derivation first, then as a run.
 */
function queriesFor(target: string, attr: string | undefined): URLSearchParams[] {
  if (attr !== undefined) return [new URLSearchParams({ run: target, attr })];
  if (target.startsWith('/')) return [new URLSearchParams({ path: target })];
  const canBeRun = runIdSchema.safeParse(target).success;
  if (!isHashPrefix(target)) return canBeRun ? [new URLSearchParams({ run: target })] : [new URLSearchParams({ path: target })];
  return canBeRun ? [new URLSearchParams({ path: target }), new URLSearchParams({ run: target })] : [new URLSearchParams({ path: target })];
}

export function logCommand(): Command {
  return new Command('log')
    .description("print a build's log (live while it builds): by .drv path, output path, hash prefix, or a run and its attribute")
    .argument('<target>', 'a .drv path, an output path (or a ./result symlink), a unique hash prefix, or a run id')
    .argument('[attr]', "with a run id: the attribute whose derivation's log to print (not needed when the run built one derivation)")
    .option('--coordinator <url>', 'coordinator HTTP API')
    .option('--token <token>', TOKEN_OPTION_HELP)
    .option('-f, --follow', 'keep printing the log as it is written until the build ends')
    .option('--json', 'print what is known about the log (status, live, complete, attempts, stored file) as JSON instead of the log')
    .addHelpText(
      'after',
      [
        '',
        "The coordinator also stores each log in Nix's layout: `nix-store --read-log DRV` on it shows the same text.",
        'A build whose worker stopped reporting keeps what it streamed, ending in "nixfarm: log incomplete: ...".',
        '',
        'A build that printed nothing has an empty log: nothing on stdout, a note on stderr, exit 0.',
        '',
        'Exit status: 0 printed (or empty), 2 unknown derivation or run, no log (not built yet, or never built here), ambiguous prefix, or not a valid argument.',
        '',
        'Examples:',
        '  nixfarm log /nix/store/0c5x...-hello-2.12.drv',
        '  nixfarm log 0c5x4q -f          # follow a running build',
        '  nixfarm log ./result',
        '  nixfarm log mwt6xsw529593a48d6 hello',
      ].join('\n'),
    )
    .action(async (rawTarget: string, attr: string | undefined, flags: LogFlags) => {
      const baseUrl = flags.coordinator ?? DEFAULT_COORDINATOR_URL;
      const token = await resolveApiToken(flags.token);
      const target = attr === undefined ? await resolveLocalSymlink(rawTarget) : rawTarget;
      if (target.startsWith('/')) {
        const { parseWhyQuery } = await import('@nixfarm/coordinator');
        parseWhyQuery(target); // the store-path grammar, before anything is sent
      }
      let response: Response | undefined;
      const candidates = queriesFor(target, attr);
      for (const [i, query] of candidates.entries()) {
        if (flags.json) query.set('info', '1');
        else if (flags.follow) query.set('follow', '1');
        try {
          response = await request(baseUrl, token, query);
          break;
        } catch (error) {
          // A word that named no derivation may still be a run id; one that named a derivation without a log did name it.
          if (error instanceof LogRequestError && (error.status === 404 || error.status === 400) && error.code !== 'log-not-found' && i + 1 < candidates.length)
            continue;
          throw error;
        }
      }
      if (response === undefined || response.body === null) throw new CliError(`the coordinator sent no log for ${target}`, EXIT_USAGE);
      if (flags.json) return void process.stdout.write(`${JSON.stringify(await response.json(), null, 2)}\n`);
      if (!flags.follow) {
        const printed = { bytes: 0 };
        await copyToStdout(response, 0, printed);
        if (printed.bytes === 0) noteEmptyLog(response, target);
        return;
      }
      await followAcrossRestarts(baseUrl, token, response);
    });
}

/** Nothing on stdout is an answer too: say which, on stderr, so it is not taken for a missing log (that is exit 2). */
function noteEmptyLog(response: Response, target: string): void {
  const drvPath = response.headers.get('x-nixfarm-drv-path') ?? target;
  const live = response.headers.get('x-nixfarm-log-live') === 'true';
  process.stderr.write(
    live
      ? `nixfarm log: the build of ${drvPath} has printed nothing yet (it is running; -f follows it)\n`
      : `nixfarm log: the build of ${drvPath} printed nothing (empty log)\n`,
  );
}

/** Writes the body to stdout, leaving out its first `skip` bytes; `counted.bytes` follows how many bytes of the body came. */
async function copyToStdout(response: Response, skip: number, counted?: { bytes: number }): Promise<void> {
  let seen = 0;
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    const start = Math.min(chunk.length, Math.max(0, skip - seen));
    seen += chunk.length;
    if (counted !== undefined) counted.bytes = seen;
    if (start === chunk.length) continue;
    if (!process.stdout.write(start === 0 ? chunk : chunk.subarray(start))) await new Promise((r) => process.stdout.once('drain', r));
  }
}

/** How long `log -f` keeps trying to reach a coordinator that went away mid-log, like `nixfarm build`. */
const RECONNECT_MS = 5 * 60_000;

/**
 * `log -f` until the build ends. A clean end of the response is the build's
 * end; a cut one is the coordinator going away (a restart): follow again by
 * the derivation's path, which replays the log from its start, and skip
 * what was printed already.
 */
async function followAcrossRestarts(baseUrl: string, token: string | undefined, first: Response): Promise<void> {
  const drvPath = first.headers.get('x-nixfarm-drv-path');
  let response = first;
  const printed = { bytes: 0 };
  for (;;) {
    const skip = printed.bytes;
    try {
      await copyToStdout(response, skip, printed);
      return;
    } catch (error) {
      printed.bytes = Math.max(printed.bytes, skip);
      if (drvPath === null) throw new CliError(`lost the coordinator at ${baseUrl} mid-log (${(error as Error).message})`, EXIT_USAGE);
      process.stderr.write(
        `nixfarm: lost the coordinator at ${baseUrl} mid-log (${(error as Error & { cause?: Error }).cause?.message ?? (error as Error).message}); reconnecting for up to 5 minutes\n`,
      );
      response = await reconnect(baseUrl, token, drvPath);
      process.stderr.write('nixfarm: reconnected; following the log again\n');
    }
  }
}

async function reconnect(baseUrl: string, token: string | undefined, drvPath: string): Promise<Response> {
  const deadline = Date.now() + RECONNECT_MS;
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    try {
      return await request(baseUrl, token, new URLSearchParams({ path: drvPath, follow: '1' }));
    } catch (error) {
      // A refusal (the derivation unknown, a token no longer valid) will not change by waiting.
      if (error instanceof LogRequestError || Date.now() > deadline) throw error;
    }
  }
}
