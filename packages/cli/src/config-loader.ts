import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { formatZodError } from '@nixfarm/shared';
import { CliError } from './exit-codes.js';

/** Config fields whose flag is not simply the field in kebab-case. */
const FLAG_FOR_FIELD: Record<string, string> = {
  redisUrl: '--redis',
  redisCaFile: '--redis-ca',
  redisCertFile: '--redis-cert',
  redisKeyFile: '--redis-key',
  systems: '--system',
  supportedFeatures: '--features',
  nixOptions: '--nix-option',
  coordinatorHost: '--coordinator',
  coordinatorPort: '--coordinator HOST:PORT',
  coordinatorHostKey: '--host-key',
  localBuilds: '--no-local-builds',
};

function flagFor(field: string): string {
  return FLAG_FOR_FIELD[field] ?? `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Reads an optional JSON config file, lets flags override it, and validates the result, naming every bad field, where it came from and what is allowed. */
export async function loadConfig<S extends z.ZodType>(
  schema: S,
  file: string | undefined,
  fromFlags: Record<string, unknown>,
  what: string,
  defaults: Record<string, unknown> = {},
): Promise<z.infer<S>> {
  let base: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      throw new CliError(`cannot read config file ${file}: ${(error as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new CliError(`config file ${file} is not valid JSON: ${(error as Error).message}`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new CliError(
        `config file ${file} must hold a JSON object of settings (like {"maxJobs": 4}), not ${Array.isArray(json) ? 'a list' : JSON.stringify(json)}`,
      );
    }
    base = json as Record<string, unknown>;
  }
  const merged: Record<string, unknown> = { ...defaults, ...base };
  const flagged = new Set<string>();
  for (const [k, v] of Object.entries(fromFlags)) {
    if (v === undefined) continue;
    merged[k] = v;
    flagged.add(k);
  }
  const parsed = schema.safeParse(merged, { reportInput: true });
  if (!parsed.success) {
    // Name the field, and where its value came from: a flag, or the config file.
    const fieldLabel = (path: ReadonlyArray<PropertyKey>): string => {
      if (path.length === 0) return file === undefined ? 'the settings' : `in ${file}`;
      const field = String(path[0]);
      const dotted = path.map(String).join('.');
      const source = !flagged.has(field) && file !== undefined && field in base ? `in ${file}` : flagFor(field);
      return `${dotted} (${source})`;
    };
    throw new CliError(`${formatZodError(parsed.error, what, { fieldLabel })}\n(see \`nixfarm ${what.split(' ')[0]} --help\`)`);
  }
  return parsed.data;
}

export function parseNixOption(value: string, previous: Array<[string, string]> = []): Array<[string, string]> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new CliError(`--nix-option takes NAME=VALUE (like sandbox=true), got ${JSON.stringify(value)}`);
  return [...previous, [value.slice(0, eq), value.slice(eq + 1)]];
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function commaList(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0),
  ];
}

export function integer(name: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new CliError(`${name} must be a whole number, got ${JSON.stringify(value)}`);
    return n;
  };
}

export function number(name: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isFinite(n)) throw new CliError(`${name} must be a number, got ${JSON.stringify(value)}`);
    return n;
  };
}
