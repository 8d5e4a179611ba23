import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Command } from 'commander';
import { API_SCOPES, apiTokenPath, readApiTokenFile, type ApiScope } from '@nixfarm/shared';
import { CliError } from '../exit-codes.js';
import { DEFAULT_COORDINATOR_STATE } from './coordinator-command.js';
import { DEFAULT_WORKER_STATE } from './worker-command.js';

export function authorizeCommand(): Command {
  return new Command('authorize')
    .description("allow a worker's SSH key to use the coordinator's store endpoint and post reports (no restart needed); --revoke takes it away")
    .argument('<key>', 'the worker\'s public key line ("ssh-ed25519 AAAA... name"), a file holding it, or with --revoke also its fingerprint (SHA256:...)')
    .option('--state-dir <dir>', `the coordinator's state dir (default ${DEFAULT_COORDINATOR_STATE})`)
    .option(
      '--revoke',
      "remove the key instead: the running coordinator stops counting that worker's reports, queues its running builds again and refuses its logins",
    )
    .addHelpText(
      'after',
      '\nExamples:\n  nixfarm authorize --state-dir /var/lib/nixfarm "$(ssh builder1 nixfarm worker-key)"\n  nixfarm authorize --state-dir /var/lib/nixfarm --revoke SHA256:2f0cXzE9...',
    )
    .action(async (key: string, flags: { stateDir?: string; revoke?: boolean }) => {
      const line = flags.revoke === true && /^SHA256:/.test(key.trim()) ? key.trim() : await keyLine(key, flags.revoke === true);
      const stateDir = path.resolve(flags.stateDir ?? DEFAULT_COORDINATOR_STATE);
      const file = path.join(stateDir, 'authorized_keys');
      const { AuthorizedKeys } = await import('@nixfarm/coordinator');
      const keys = new AuthorizedKeys(stateDir);
      if (flags.revoke === true) {
        let removed: string | undefined;
        try {
          removed = await keys.remove(line);
        } catch (error) {
          throw new CliError(`cannot revoke that key: ${(error as Error).message}`);
        }
        if (removed === undefined) throw new CliError(`${line.length > 80 ? `${line.slice(0, 80)}...` : line} is not in ${file}: nothing revoked`);
        process.stdout.write(`revoked ${removed} in ${file}\n`);
        return;
      }
      let fingerprint: string;
      try {
        fingerprint = await keys.add(line);
      } catch (error) {
        throw new CliError(`cannot authorise that key: ${(error as Error).message}`);
      }
      process.stdout.write(`authorised ${fingerprint} in ${file}\n`);
    });
}

/** A public key line as given, or read from the file named. */
async function keyLine(key: string, revoke: boolean): Promise<string> {
  const line = key.trim();
  if (/^(ssh-|ecdsa-)/.test(line)) return line;
  try {
    return (await readFile(key, 'utf8')).trim();
  } catch {
    const also = revoke ? ', a fingerprint (SHA256:...)' : '';
    throw new CliError(`${JSON.stringify(key)} is neither a public key line (ssh-ed25519 AAAA...)${also} nor a readable file`);
  }
}

export function workerKeyCommand(): Command {
  return new Command('worker-key')
    .description("print this worker's public SSH key (created on first use), to authorise it on the coordinator")
    .option('--state-dir <dir>', `the worker's state dir (default ${DEFAULT_WORKER_STATE})`)
    .addHelpText('after', '\nExample:\n  nixfarm worker-key --state-dir /var/lib/nixfarm-worker')
    .action(async (flags: { stateDir?: string }) => {
      const { loadOrCreateWorkerKey } = await import('@nixfarm/worker');
      const identity = await loadOrCreateWorkerKey(path.resolve(flags.stateDir ?? DEFAULT_WORKER_STATE));
      process.stdout.write(`${identity.publicKeyLine}\n`);
    });
}

export function apiTokenCommand(): Command {
  return new Command('api-token')
    .description("print one of the coordinator's API tokens (made at its first start), to hand to a user or a Prometheus scraper")
    .option('--state-dir <dir>', `the coordinator's state dir (default ${DEFAULT_COORDINATOR_STATE})`)
    .option('--scope <scope>', 'read (every GET: runs, workers, status, logs, /metrics) or admin (also submit and cancel runs)', 'read')
    .addHelpText(
      'after',
      '\nExamples:\n  nixfarm api-token --state-dir /var/lib/nixfarm --scope read > scraper-token\n  NIXFARM_TOKEN=$(nixfarm api-token --state-dir /var/lib/nixfarm --scope admin) nixfarm build -A hello',
    )
    .action(async (flags: { stateDir?: string; scope: string }) => {
      if (!(API_SCOPES as readonly string[]).includes(flags.scope))
        throw new CliError(`--scope takes ${API_SCOPES.join(' or ')}, got ${JSON.stringify(flags.scope)}`);
      const stateDir = path.resolve(flags.stateDir ?? DEFAULT_COORDINATOR_STATE);
      const file = apiTokenPath(stateDir, flags.scope as ApiScope);
      let token: string | undefined;
      try {
        token = await readApiTokenFile(file);
      } catch (error) {
        throw new CliError((error as Error).message);
      }
      if (token === undefined)
        throw new CliError(`${file} does not exist: the coordinator makes its tokens at its first start (is --state-dir ${stateDir} its state dir?)`);
      process.stdout.write(`${token}\n`);
    });
}

export function cacheKeyCommand(): Command {
  return new Command('cache-key')
    .description("print the public half of the coordinator's signing key, as nix.conf's trusted-public-keys takes it")
    .option('--state-dir <dir>', `the coordinator's state dir, where it made its key (default ${DEFAULT_COORDINATOR_STATE})`)
    .option('--signing-key <file>', 'the secret key file the coordinator was given with --signing-key')
    .addHelpText(
      'after',
      '\nExample (on a machine that substitutes from the farm):\n  echo "extra-trusted-public-keys = $(ssh farm nixfarm cache-key --state-dir /var/lib/nixfarm)" >> /etc/nix/nix.conf',
    )
    .action(async (flags: { stateDir?: string; signingKey?: string }) => {
      const { readSigningKey, defaultSigningKeyPath } = await import('@nixfarm/coordinator');
      const stateDir = path.resolve(flags.stateDir ?? DEFAULT_COORDINATOR_STATE);
      const file = path.resolve(flags.signingKey ?? defaultSigningKeyPath(stateDir));
      if (flags.signingKey === undefined && !existsSync(file))
        throw new CliError(`${file} does not exist: the coordinator makes its signing key at its first start (is --state-dir ${stateDir} its state dir?)`);
      try {
        process.stdout.write(`${(await readSigningKey(file)).publicKey}\n`);
      } catch (error) {
        throw new CliError((error as Error).message);
      }
    });
}
