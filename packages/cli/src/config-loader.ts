import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { formatZodError } from '@nixfarm/shared';
import { CliError } from './exit-codes.js';

/** Reads an optional JSON config file, lets flags override it, and validates the result, naming every bad field. */
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
    try {
      base = JSON.parse(text) as Record<string, unknown>;
    } catch (error) {
      throw new CliError(`config file ${file} is not valid JSON: ${(error as Error).message}`);
    }
  }
  const merged: Record<string, unknown> = { ...defaults, ...base };
  for (const [k, v] of Object.entries(fromFlags)) if (v !== undefined) merged[k] = v;
  const parsed = schema.safeParse(merged);
  if (!parsed.success) throw new CliError(`${formatZodError(parsed.error, what)}\n(see \`nixfarm ${what.split(' ')[0]} --help\`)`);
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
  return [...previous, ...value.split(',').map((s) => s.trim()).filter((s) => s.length > 0)];
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
