import { parseStorePath } from './store-path.js';

/** A registry repository images are pushed to: `registry[:port]/path`, without a tag (nixfarm names the tags). */
export interface ImageRepository {
  /** host[:port] as written */
  registry: string;
  /** the path inside the registry (`team/app`) */
  path: string;
  /** `registry/path`, what skopeo's docker:// transport takes before `:TAG` */
  reference: string;
}

const HOST_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const REGISTRY = new RegExp(`^(?:${HOST_COMPONENT}(?:\\.${HOST_COMPONENT})*|\\[[0-9a-fA-F:]+\\])(?::[0-9]{1,5})?$`);
/** The distribution spec's path component: lower-case alphanumerics joined by single separators. */
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const EXAMPLES = 'like registry.example.com/team/app or 127.0.0.1:5000/app';

/** Why `text` is not a repository to publish images to; undefined when it is one. */
export function imageRepositoryProblem(text: string): string | undefined {
  const slash = text.indexOf('/');
  if (slash <= 0) return `${JSON.stringify(text)} names no registry: give REGISTRY/REPO, ${EXAMPLES}`;
  const registry = text.slice(0, slash);
  const path = text.slice(slash + 1);
  // Docker's rule: the first component is a registry only with a dot, a port or as localhost; a bare name would mean Docker Hub.
  if (!REGISTRY.test(registry) || !(registry.includes('.') || registry.includes(':') || registry === 'localhost'))
    return `${JSON.stringify(registry)} is not a registry host (a name with a dot, host:port or localhost): give REGISTRY/REPO, ${EXAMPLES}`;
  if (path.includes('@') || /:[^/]*$/.test(path))
    return `${JSON.stringify(text)} has a tag or digest: give the repository only, nixfarm tags each image ATTR-HASHPART`;
  const bad = path.split('/').find((c) => !PATH_COMPONENT.test(c));
  if (bad !== undefined)
    return `${JSON.stringify(bad)} in ${JSON.stringify(text)} is not a repository path component (lower-case letters and digits, joined by . _ or -)`;
  if (text.length > 255) return `${JSON.stringify(text)} is longer than 255 characters`;
  return undefined;
}

/** Parses a repository checked by imageRepositoryProblem (throws with its message otherwise). */
export function parseImageRepository(text: string): ImageRepository {
  const problem = imageRepositoryProblem(text);
  if (problem !== undefined) throw new Error(problem);
  const slash = text.indexOf('/');
  return { registry: text.slice(0, slash), path: text.slice(slash + 1), reference: text };
}

/** Whether a registry host is this machine's loopback: the only place plain HTTP (no TLS verification) may be asked for. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith('[') ? registry.slice(0, registry.indexOf(']') + 1) : registry.replace(/:[0-9]+$/, '');
  return host === 'localhost' || host === '[::1]' || /^127(?:\.[0-9]{1,3}){3}$/.test(host);
}

/** A tag may hold letters, digits, _ . and -, start with a letter, digit or _, and be at most 128 long. */
const TAG_MAX = 128;

/** The tag of an attribute's image: `ATTR-HASHPART`, the attribute (or the output's name without one) made tag-safe. */
export function imageTag(attr: string, outputPath: string): string {
  const { hash, name } = parseStorePath(outputPath);
  const base = (attr === '' ? name : attr).replace(/[^\w.-]+/g, '-').replace(/^[.-]+/, '');
  return `${base.slice(0, TAG_MAX - hash.length - 1) || 'image'}-${hash}`;
}
