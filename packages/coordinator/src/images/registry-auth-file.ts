import { readFile } from 'node:fs/promises';
import { NixfarmError } from '@nixfarm/shared';

const FORM =
  'the containers-auth.json form skopeo reads ({"auths": {"REGISTRY": {"auth": "BASE64(user:password)"}}}; `skopeo login --authfile FILE REGISTRY` writes it)';

class RegistryAuthFileError extends NixfarmError {
  constructor(message: string) {
    super('invalid-registry-auth-file', message);
  }
}

/** The host an auths key names: keys may carry a scheme and a path (`https://registry.example.com/v1/`). */
function keyRegistry(key: string): string {
  return key.replace(/^[a-z]+:\/\//, '').split('/')[0]!;
}

/**
 * Checks a registry credentials file when a run is submitted, so that a bad
 * one is refused at once instead of failing every push later: readable by
 * the coordinator, JSON, with an entry for the registry. Its contents are
 * never logged or stored: skopeo reads the file itself (--authfile).
 */
export async function checkRegistryAuthFile(file: string, registry: string): Promise<void> {
  let raw: string;
  try {
    raw = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new RegistryAuthFileError(`registry credentials file ${file} does not exist on the coordinator machine: create it in ${FORM}`);
    if (code === 'EACCES')
      throw new RegistryAuthFileError(
        `registry credentials file ${file} cannot be read by the coordinator: make it readable by its user (mode 0600, owned by that user)`,
      );
    throw new RegistryAuthFileError(`registry credentials file ${file} cannot be read (${code ?? String(error)}): give a readable file in ${FORM}`);
  }
  let auths: unknown;
  try {
    auths = (JSON.parse(raw) as { auths?: unknown } | null)?.auths;
  } catch {
    throw new RegistryAuthFileError(`registry credentials file ${file} is not JSON: write it in ${FORM}`);
  }
  if (typeof auths !== 'object' || auths === null || Array.isArray(auths))
    throw new RegistryAuthFileError(`registry credentials file ${file} has no "auths" object: write it in ${FORM}`);
  const names = Object.keys(auths);
  if (!names.some((key) => keyRegistry(key) === registry))
    throw new RegistryAuthFileError(
      `registry credentials file ${file} has no credentials for ${registry} (it has ${names.length === 0 ? 'none' : names.join(', ')}): add an "auths" entry for ${registry}`,
    );
}
