import { assertDerivationPath, assertStorePath, derivationName } from './store-path.js';

/** A parsed .drv file: what the coordinator needs to plan and route a build. */
export interface Derivation {
  path: string;
  name: string;
  /** output name -> store path ('' for content-addressed outputs whose path is not known yet) */
  outputs: Record<string, string>;
  /** input derivation path -> the output names used from it */
  inputDrvs: Record<string, string[]>;
  inputSrcs: string[];
  system: string;
  builder: string;
  args: string[];
  /** output name -> how a fixed-output derivation's output is checked ('' and '' for input-addressed outputs) */
  outputHashes: Record<string, { hashAlgo: string; hash: string }>;
  env: Record<string, string>;
  requiredSystemFeatures: string[];
  preferLocalBuild: boolean;
}

export class DerivationParseError extends Error {
  constructor(
    readonly drvPath: string,
    message: string,
  ) {
    super(`cannot parse derivation ${drvPath}: ${message}`);
    this.name = 'DerivationParseError';
  }
}

/**
 * A parser for Nix's ATerm derivation format, `Derive([outputs],[inputDrvs],[inputSrcs],system,builder,[args],[env])`.
 * Reading the files ourselves is stable across every Nix release, unlike `nix show-derivation`'s JSON,
 * and needs no process per derivation.
 */
class ATermReader {
  private pos = 0;
  constructor(
    private readonly text: string,
    private readonly drvPath: string,
  ) {}

  fail(message: string): never {
    throw new DerivationParseError(this.drvPath, `${message} at offset ${this.pos}`);
  }

  expect(token: string): void {
    if (!this.text.startsWith(token, this.pos)) this.fail(`expected ${JSON.stringify(token)}`);
    this.pos += token.length;
  }

  peek(token: string): boolean {
    return this.text.startsWith(token, this.pos);
  }

  string(): string {
    this.expect('"');
    let out = '';
    for (;;) {
      const c = this.text[this.pos++];
      if (c === undefined) this.fail('unterminated string');
      if (c === '"') return out;
      if (c === '\\') {
        const e = this.text[this.pos++];
        if (e === undefined) this.fail('unterminated escape');
        out += e === 'n' ? '\n' : e === 'r' ? '\r' : e === 't' ? '\t' : e;
      } else {
        out += c;
      }
    }
  }

  list<T>(item: () => T): T[] {
    this.expect('[');
    const items: T[] = [];
    while (!this.peek(']')) {
      if (items.length > 0) this.expect(',');
      items.push(item());
    }
    this.expect(']');
    return items;
  }

  tuple<T>(body: () => T): T {
    this.expect('(');
    const value = body();
    this.expect(')');
    return value;
  }

  end(): void {
    if (this.pos !== this.text.length) this.fail('trailing data');
  }
}

export function parseDerivation(drvPath: string, text: string): Derivation {
  assertDerivationPath(drvPath);
  const r = new ATermReader(text, drvPath);
  r.expect('Derive(');
  const outputs: Record<string, string> = {};
  const outputHashes: Record<string, { hashAlgo: string; hash: string }> = {};
  for (const [name, path, hashAlgo, hash] of r.list(() =>
    r.tuple(() => {
      const name = r.string();
      r.expect(',');
      const path = r.string();
      r.expect(',');
      const hashAlgo = r.string();
      r.expect(',');
      const hash = r.string();
      return [name, path, hashAlgo, hash] as const;
    }),
  )) {
    if (path !== '') assertStorePath(path);
    outputs[name] = path;
    outputHashes[name] = { hashAlgo, hash };
  }
  r.expect(',');
  const inputDrvs: Record<string, string[]> = {};
  for (const [path, names] of r.list(() =>
    r.tuple(() => {
      const path = r.string();
      r.expect(',');
      const names = r.list(() => r.string());
      return [path, names] as const;
    }),
  )) {
    inputDrvs[assertDerivationPath(path)] = names;
  }
  r.expect(',');
  const inputSrcs = r.list(() => assertStorePath(r.string()));
  r.expect(',');
  const system = r.string();
  r.expect(',');
  const builder = r.string();
  r.expect(',');
  const args = r.list(() => r.string());
  r.expect(',');
  const env: Record<string, string> = {};
  for (const [k, v] of r.list(() =>
    r.tuple(() => {
      const k = r.string();
      r.expect(',');
      const v = r.string();
      return [k, v] as const;
    }),
  )) {
    env[k] = v;
  }
  r.expect(')');
  r.end();
  if (Object.keys(outputs).length === 0) throw new DerivationParseError(drvPath, 'no outputs');
  return {
    path: drvPath,
    name: env.name ?? derivationName(drvPath),
    outputs,
    inputDrvs,
    inputSrcs,
    system,
    builder,
    args,
    outputHashes,
    env,
    requiredSystemFeatures: parseFeatureList(env.requiredSystemFeatures),
    preferLocalBuild: env.preferLocalBuild === '1',
  };
}

function parseFeatureList(value: string | undefined): string[] {
  if (value === undefined) return [];
  return [...new Set(value.split(/\s+/).filter((f) => f.length > 0))].sort();
}
