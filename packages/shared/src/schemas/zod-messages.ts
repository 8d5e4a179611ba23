import { z } from 'zod';

type RawIssue = z.core.$ZodRawIssue;

/** How much of a rejected value a message repeats: enough to recognise it, never a whole request body. */
const SHOWN_VALUE_MAX = 60;

/** A value as the person typed it (JSON, so a newline shows as \n), cut short when long. */
function showValue(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > SHOWN_VALUE_MAX ? `${text.slice(0, SHOWN_VALUE_MAX)}… (${text.length} characters)` : text;
}

const NOUNS: Record<string, string> = {
  int: 'a whole number',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  array: 'a list',
  tuple: 'a list',
  object: 'an object',
  record: 'an object',
  bigint: 'a whole number',
  null: 'null',
};

function sizeOf(input: unknown): number | undefined {
  if (typeof input === 'string' || Array.isArray(input)) return input.length;
  return undefined;
}

/** Edit distance, for "did you mean": small names only. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}

function suggestion(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase().replace(/[-_]/g, '');
  const exact = known.find((k) => k.toLowerCase() === lower);
  if (exact !== undefined) return exact;
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = distance(key, k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

function knownKeys(issue: RawIssue): string[] {
  const shape = (issue.inst as { _zod?: { def?: { shape?: Record<string, unknown> } } } | undefined)?._zod?.def?.shape;
  return shape === undefined ? [] : Object.keys(shape);
}

function range(issue: { minimum?: unknown; maximum?: unknown; inclusive?: boolean }, lower: boolean): string {
  const bound = String(lower ? issue.minimum : issue.maximum);
  if (issue.inclusive === false) return `${lower ? 'more' : 'less'} than ${bound}`;
  return `${lower ? 'at least' : 'at most'} ${bound}`;
}

/**
 * nixfarm's wording for zod's built-in checks: what is allowed (every value of
 * an enum, the bound of a range, the known fields) and what was given. A
 * message a schema sets itself wins over these (zod's precedence), so a
 * field's own explanation stays. Undefined: zod's default wording.
 */
function issueMessage(issue: RawIssue): string | undefined {
  const input = issue.input;
  switch (issue.code) {
    case 'invalid_type': {
      const expected = NOUNS[issue.expected] ?? issue.expected;
      if (input === undefined) return `missing: give ${expected}`;
      return `expected ${expected}, got ${showValue(input)}${typeof input === 'string' ? ' (a string)' : ''}`;
    }
    case 'invalid_value': {
      const values = issue.values.map((v) => (typeof v === 'string' ? v : showValue(v)));
      return values.length === 1 ? `expected ${values[0]}, got ${showValue(input)}` : `expected one of ${values.join(', ')}; got ${showValue(input)}`;
    }
    case 'too_small':
    case 'too_big': {
      const lower = issue.code === 'too_small';
      const bound = issue as { origin?: string; minimum?: unknown; maximum?: unknown; inclusive?: boolean };
      const size = sizeOf(input);
      switch (bound.origin) {
        case 'number':
        case 'int':
        case 'bigint':
          return `must be ${range(bound, lower)}; got ${showValue(input)}`;
        case 'string':
          if (lower && Number(bound.minimum) === 1) return 'must not be empty';
          return `must be ${range(bound, lower)} characters long${size === undefined ? '' : ` (got ${size})`}`;
        case 'array':
        case 'set':
          if (lower && Number(bound.minimum) === 1) return 'must not be empty: give at least one';
          return `must have ${range(bound, lower)} entries${size === undefined ? '' : ` (got ${size})`}`;
        default:
          return undefined;
      }
    }
    case 'unrecognized_keys': {
      const known = knownKeys(issue);
      const named = issue.keys.map((key) => {
        const like = suggestion(key, known);
        return `${showValue(key)}${like === undefined ? '' : ` (did you mean ${showValue(like)}?)`}`;
      });
      const list = known.length > 0 ? `; known fields: ${known.join(', ')}` : '';
      return `unknown field${named.length === 1 ? '' : 's'} ${named.join(', ')}${list}`;
    }
    case 'invalid_union': {
      // A discriminated union (worker events): name the kinds there are.
      const union = issue as { discriminator?: string; options?: unknown[] };
      if (union.discriminator === undefined || !Array.isArray(union.options)) return undefined;
      const given = typeof input === 'object' && input !== null ? (input as Record<string, unknown>)[union.discriminator] : undefined;
      const values = union.options.map((v) => (typeof v === 'string' ? v : showValue(v))).join(', ');
      return given === undefined ? `missing: give one of ${values}` : `expected one of ${values}; got ${showValue(given)}`;
    }
    default:
      return undefined;
  }
}

// Once for the process; schema-specific messages still take precedence.
z.config({ customError: issueMessage });

export interface FormatZodErrorOptions {
  /** how to name a field (the CLI adds its flag); [] for the object itself (unknown fields); default: the dotted path */
  fieldLabel?: (path: ReadonlyArray<PropertyKey>) => string;
}

/** Flattens zod issues into one line per field: which field, what is allowed, what was given. */
export function formatZodError(error: z.ZodError, what: string, options: FormatZodErrorOptions = {}): string {
  const lines = error.issues.map((issue) => {
    const path = issue.path;
    // An unknown field is reported on its parent object; its message names the field.
    if (path.length === 0) {
      const where = options.fieldLabel?.(path) ?? (issue.code === 'unrecognized_keys' ? undefined : 'the whole input');
      return `  ${where === undefined ? '' : `${where}: `}${issue.message}`;
    }
    const where = options.fieldLabel?.(path) ?? path.map(String).join('.');
    // Parsed with reportInput: a schema's own message gets the rejected value too.
    const given =
      issue.input !== undefined && issue.code !== 'unrecognized_keys' && !/\bgot |empty|^missing/.test(issue.message) ? ` (got ${showValue(issue.input)})` : '';
    return `  ${where}: ${issue.message}${given}`;
  });
  return `invalid ${what}:\n${lines.join('\n')}`;
}
