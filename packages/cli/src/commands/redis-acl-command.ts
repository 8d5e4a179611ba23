import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Command } from 'commander';
import { createFileExclusive, readPrivateFile, redisAclLine, type RedisAclFormat, type RedisRole } from '@nixfarm/shared';
import { CliError } from '../exit-codes.js';

const FORMATS: readonly RedisAclFormat[] = ['acl-setuser', 'users-acl'];

/**
 * A user's password: the file's first line, or a new random one written to
 * the file (mode 600) when it does not exist yet. Never on the command line,
 * where `ps` and shell history would show it.
 */
async function passwordFrom(file: string, flag: string): Promise<string> {
  const refuse = (reason: string, cause?: unknown) =>
    new CliError(`cannot use ${flag} ${file}: ${reason}${cause instanceof Error ? ` (${cause.message})` : ''}`);
  const existing = await readPrivateFile(file, refuse, { what: 'password file' });
  if (existing === undefined) {
    const made = randomBytes(32).toString('base64url');
    if (await createFileExclusive(file, `${made}\n`)) return made;
    return passwordFrom(file, flag);
  }
  const password = existing.split('\n')[0]!.trim();
  if (password === '') throw refuse('its first line is empty; write the password there, or delete the file to have one made');
  if (/\s|[@/:]/.test(password)) throw refuse('the password holds a space, @, / or :, which a redis:// URL would need escaped; use another');
  return password;
}

export function redisAclCommand(): Command {
  return new Command('redis-acl')
    .description("print the Redis users a farm needs (coordinator, workers): the ACL lines granting each only nixfarm's keys, channels and commands")
    .option('--coordinator-user <name>', "the coordinator's Redis user (default nixfarm-coordinator)", 'nixfarm-coordinator')
    .option('--worker-user <name>', 'the Redis user all workers share (default nixfarm-worker)', 'nixfarm-worker')
    .requiredOption(
      '--coordinator-password-file <file>',
      "the coordinator user's password: the file's first line; a new random one is written there (mode 600) when the file is missing",
    )
    .requiredOption('--worker-password-file <file>', "the worker user's password, likewise")
    .option(
      '--format <format>',
      'acl-setuser (commands for redis-cli) or users-acl (lines for the aclfile Redis loads at start) (default acl-setuser)',
      'acl-setuser',
    )
    .addHelpText(
      'after',
      [
        '',
        'The passwords are printed only as their SHA-256 (#...): the lines can be shown and kept; the files hold the passwords.',
        'Then: --redis redis://nixfarm-coordinator:PASSWORD@host:6379 for the coordinator, redis://nixfarm-worker:PASSWORD@host:6379 for workers.',
        '',
        'Examples:',
        '  nixfarm redis-acl --coordinator-password-file coordinator.pw --worker-password-file worker.pw | redis-cli -h redis-host --user admin --askpass',
        '  nixfarm redis-acl --coordinator-password-file coordinator.pw --worker-password-file worker.pw --format users-acl >> /etc/redis/users.acl',
      ].join('\n'),
    )
    .action(async (flags: { coordinatorUser: string; workerUser: string; coordinatorPasswordFile: string; workerPasswordFile: string; format: string }) => {
      if (!(FORMATS as readonly string[]).includes(flags.format))
        throw new CliError(`--format takes ${FORMATS.join(' or ')}, got ${JSON.stringify(flags.format)}`);
      for (const [flag, name] of [
        ['--coordinator-user', flags.coordinatorUser],
        ['--worker-user', flags.workerUser],
      ] as const)
        if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name))
          throw new CliError(`${flag} takes letters, digits, '_', '.' and '-' (at most 64), got ${JSON.stringify(name)}`);
      if (flags.coordinatorUser === flags.workerUser) throw new CliError('--coordinator-user and --worker-user must differ: the worker user gets less');
      const users: Array<{ name: string; role: RedisRole; file: string; flag: string }> = [
        { name: flags.coordinatorUser, role: 'coordinator', file: flags.coordinatorPasswordFile, flag: '--coordinator-password-file' },
        { name: flags.workerUser, role: 'worker', file: flags.workerPasswordFile, flag: '--worker-password-file' },
      ];
      for (const user of users) {
        const password = await passwordFrom(path.resolve(user.file), user.flag);
        process.stdout.write(`${redisAclLine({ name: user.name, role: user.role, password }, flags.format as RedisAclFormat)}\n`);
      }
    });
}
