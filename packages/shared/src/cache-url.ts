import { z } from 'zod';

/** Where uploads can go: a local directory, an HTTP cache taking PUTs, an S3-compatible bucket. */
export type CacheKind = 'file' | 'http' | 's3';

export interface CacheUrl {
  kind: CacheKind;
  /** the URL as given (Nix store parameters in its query, e.g. `?compression=zstd`) */
  url: string;
  /** file: the directory; http: the base URL without query; s3: the bucket */
  location: string;
}

const SCHEMES: Record<string, CacheKind> = { 'file:': 'file', 'http:': 'http', 'https:': 'http', 's3:': 's3' };

/**
 * A binary cache URL as `--push-to` and `nixfarm push --to` take it, or a
 * message that names the URL and says what would be right.
 */
export function parseCacheUrl(text: string): CacheUrl | { error: string } {
  const shown = JSON.stringify(text);
  const forms = 'file:///dir, http(s)://host/path or s3://bucket?endpoint=...&region=...';
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { error: `cache URL ${shown} does not parse: give one like ${forms}` };
  }
  const kind = SCHEMES[url.protocol];
  if (kind === undefined) return { error: `cache URL ${shown} has the scheme ${url.protocol.slice(0, -1)}, which nixfarm cannot upload to: use ${forms}` };
  if (kind === 'file') {
    if (url.host !== '' || !url.pathname.startsWith('/') || url.pathname === '/')
      return { error: `cache URL ${shown} must name an absolute directory, like file:///var/cache/nix` };
    return { kind, url: text, location: decodeURIComponent(url.pathname) };
  }
  if (kind === 's3') {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(url.hostname))
      return { error: `cache URL ${shown} must name an S3 bucket (3-63 lower-case letters, digits, dots, dashes), like s3://my-cache?region=eu-west-1` };
    const endpoint = url.searchParams.get('endpoint');
    if (endpoint !== null && !URL.canParse(endpoint.includes('://') ? endpoint : `https://${endpoint}`))
      return { error: `cache URL ${shown} has an endpoint that is not a URL: give endpoint=http://host:port` };
    return { kind, url: text, location: url.hostname };
  }
  if (url.username !== '' || url.password !== '')
    return {
      error: `cache URL ${JSON.stringify(withoutCredentials(text))} carries credentials: put them in a netrc file (Nix's netrc-file setting), never in the URL`,
    };
  return { kind, url: text, location: `${url.origin}${url.pathname.replace(/\/$/, '')}` };
}

/** The URL with any user and password masked: what messages and logs may show. */
function withoutCredentials(text: string): string {
  if (!URL.canParse(text)) return text;
  const url = new URL(text);
  if (url.username === '' && url.password === '') return text;
  url.username = url.username === '' ? '' : '***';
  url.password = url.password === '' ? '' : '***';
  return url.href;
}

/** A cache URL in configuration: refused with parseCacheUrl's message; kept as the string (a parsed config parses again). */
export const cacheUrlSchema = z.string().superRefine((text, ctx) => {
  const parsed = parseCacheUrl(text);
  // The rejected value is shown with the message: never with the credentials it may carry.
  if ('error' in parsed) ctx.addIssue({ code: 'custom', message: parsed.error, input: withoutCredentials(text) });
});
